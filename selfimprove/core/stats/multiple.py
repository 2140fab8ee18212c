"""Many questions, one error rate: several candidates, several regression checks, several looks over time.

- **Candidates.** evaluate compares K candidates with the baseline on the same held-out samples and may promote
  the best: the family of K efficacy tests is corrected with Holm's step-down procedure (`holm_adjusted`), which
  keeps the chance of promoting any candidate that is not better at most alpha, whatever their dependence.
  Each candidate's sequential test runs at level alpha / K (the first Holm step), so it stops sampling exactly
  when its evidence could pass.
- **Regression checks.** The guardrail evals are a family too: the gate refuses for a regression only when the
  Holm-adjusted p of "this eval dropped" is at most alpha (a false alarm on any of G evals stays at most alpha).
- **Looks over time.** Evaluating the same candidate against the same baseline again (a nightly cron) is another
  look at the same question. Each comparison may take `looks` planned looks (config `gate.looks`) and look k of
  them spends alpha / looks (Bonferroni spending: valid whatever the overlap between the nights' samples);
  a look past the plan has no alpha left and cannot promote. The look number is counted from the target's
  earlier reports (`look_level`).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in input order: reject H_i at level alpha iff adjusted p_i <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out


def look_level(alpha: float, look: int, looks: int) -> float:
    """The alpha that look number `look` (1-based) of `looks` planned looks may spend: alpha / looks, 0 after."""
    if look < 1 or looks < 1:
        raise ValueError(f"look and looks must be >= 1, got look={look}, looks={looks}")
    return alpha / looks if look <= looks else 0.0


def correction_text(candidates: int, look: int, looks: int, alpha: float) -> str:
    """How the level was corrected, in words, for the report."""
    parts = [f"Holm over {candidates} candidate(s)" if candidates > 1 else "one candidate (no multiplicity)"]
    parts.append(f"look {look} of {looks} planned (alpha {alpha:g} / {looks})" if looks > 1 or look > 1
                 else "first look")
    if look > looks:
        parts.append("no alpha left: past the planned looks")
    return "; ".join(parts)
