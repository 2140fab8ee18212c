"""The promotion gate: does a candidate's evidence earn it production? Pure: no I/O, no clock.

Input: one candidate entry of `report.json` (see docs: "report.json"), the name of the primary eval and the
target's gate settings. Output: a `GateDecision` carrying *every* reason for a refusal, not just the first.

The rules, all of which must hold:

1. **Guards.** The candidate passed its guard checks (`passed_guards`).
2. **Primary improvement, significant.** On the primary eval the candidate's gain over the baseline is at least
   `min_improvement` (point estimate), *and* it is significant: the 95% CI's lower bound is above 0, or the
   SPRT accepted H1 (the candidate is better by the minimum effect); *and* the exact one-sided sign test on the
   paired wins and losses has p ≤ α / K, where K is the number of candidates the report compared on the same
   held-out samples (Bonferroni). Why the last part: evaluate picks the best of K candidates on the very data
   that tests it, and a percentile bootstrap CI undercovers on small samples; in a simulated world where no
   candidate is better (tests/test_loop_e2e.py) the CI rule alone promoted about one run in three. With it, the
   chance of promoting a candidate that is not better is at most α, as DESIGN.md promises.
3. **No regression beyond tolerance.** For every other eval, with tolerance `max_regression[eval]` (or
   `default_max_regression`): the eval *regresses* when its point estimate drops by more than the tolerance
   **and** the CI excludes 0 (the drop is distinguishable from noise). A drop beyond tolerance whose CI still
   includes 0 is not a refusal but is returned as a warning, so a reviewer sees it.
4. **Cost.** With `max_cost_per_call_usd` set, the candidate's cost per call is at most the ceiling (an unknown
   cost with a ceiling set is a refusal: the gate cannot show the ceiling is kept).
5. **Evidence present.** The primary eval exists in the entry, with a non-empty sample.

Directions: `diff` and `ci` in the report are candidate minus baseline in the eval's own units. For an eval whose
direction is "minimize" the gain is `-diff` and the CI is mirrored; every threshold applies to the gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateSettings(BaseModel):
    """The thresholds the gate applies (a view of the config's `[gate]` plus the primary eval)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    primary_eval: str
    min_improvement: float = 0.02
    alpha: float = Field(0.05, gt=0, lt=1)
    comparisons: int = Field(1, ge=1, description="candidates compared on the same held-out samples (K)")
    max_regression: dict[str, float] = Field(default_factory=dict)
    default_max_regression: float = 0.02
    max_cost_per_call_usd: float | None = None

    def tolerance(self, eval_name: str) -> float:
        return self.max_regression.get(eval_name, self.default_max_regression)


class EvalCheck(BaseModel):
    """One eval's verdict: its gain (direction-adjusted), CI on the gain, and what the gate made of it."""

    model_config = ConfigDict(frozen=True)
    eval: str
    role: str  # "primary" | "guardrail"
    gain: float | None
    ci: tuple[float, float] | None
    n: int | None
    threshold: float
    verdict: str  # "improved" | "not significant" | "too small" | "ok" | "regressed" | "possible regression" | "missing"


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    candidate: str | None
    passed: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checks: tuple[EvalCheck, ...] = ()
    settings: GateSettings


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def directed(entry: Mapping[str, Any]) -> tuple[float | None, tuple[float, float] | None]:
    """(gain, CI on the gain) of one eval entry: `diff`/`ci` as is for "maximize", mirrored for "minimize"."""
    sign = -1.0 if entry.get("direction") == "minimize" else 1.0
    diff = _finite(entry.get("diff"))
    gain = None if diff is None else sign * diff
    ci_raw = entry.get("ci")
    ci = None
    if isinstance(ci_raw, (list, tuple)) and len(ci_raw) == 2:
        lo, hi = _finite(ci_raw[0]), _finite(ci_raw[1])
        if lo is not None and hi is not None:
            a, b = sign * lo, sign * hi
            ci = (min(a, b), max(a, b))
    return gain, ci


def sign_test_p(wins: int, losses: int) -> float:
    """Exact one-sided sign test: P(X >= wins) for X ~ Binomial(wins + losses, 1/2); 1.0 with no untied pair."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "no CI"


def _check_primary(name: str, ev: Mapping[str, Any] | None, s: GateSettings, reasons: list[str]) -> EvalCheck:
    if ev is None:
        reasons.append(f"primary eval '{name}' is missing from the candidate's results")
        return EvalCheck(eval=name, role="primary", gain=None, ci=None, n=None, threshold=s.min_improvement,
                         verdict="missing")
    gain, ci = directed(ev)
    n = ev.get("n")
    if gain is None or not n:
        reasons.append(f"primary eval '{name}' has no scored samples (n={n})")
        return EvalCheck(eval=name, role="primary", gain=gain, ci=ci, n=n, threshold=s.min_improvement,
                         verdict="missing")
    verdict = "improved"
    if gain < s.min_improvement:
        reasons.append(f"primary eval '{name}' improved by {gain:+.3f}, less than the required "
                       f"{s.min_improvement:+.3f} (95% CI {_fmt_ci(ci)}, n={n})")
        verdict = "too small"
    sprt = (ev.get("sprt") or {}).get("decision")
    significant = (ci is not None and ci[0] > 0) or sprt == "accept_h1"
    if not significant:
        reasons.append(f"primary eval '{name}' gain {gain:+.3f} is not significant: 95% CI {_fmt_ci(ci)} "
                       f"includes 0 and SPRT says {sprt or 'nothing'} (n={n})")
        verdict = "not significant" if verdict == "improved" else verdict
    level = s.alpha / s.comparisons
    wins, losses = ev.get("wins"), ev.get("losses")
    if ev.get("direction") == "minimize":
        wins, losses = losses, wins
    if not isinstance(wins, int) or not isinstance(losses, int):
        reasons.append(f"primary eval '{name}' has no wins/losses, so significance cannot be checked")
        verdict = "not significant" if verdict == "improved" else verdict
    elif (p := sign_test_p(wins, losses)) > level:
        reasons.append(f"primary eval '{name}': one-sided sign test p={p:.4f} ({wins} wins, {losses} losses) is "
                       f"above α/K = {s.alpha:g}/{s.comparisons} = {level:.4f} ({s.comparisons} candidate(s) "
                       "compared on the same held-out samples)")
        verdict = "not significant" if verdict == "improved" else verdict
    return EvalCheck(eval=name, role="primary", gain=gain, ci=ci, n=n, threshold=s.min_improvement, verdict=verdict)


def _check_guardrail(name: str, ev: Mapping[str, Any], s: GateSettings, reasons: list[str],
                     warnings: list[str]) -> EvalCheck:
    tol = s.tolerance(name)
    gain, ci = directed(ev)
    n = ev.get("n")
    verdict = "ok"
    if gain is None:
        warnings.append(f"eval '{name}' has no estimate (n={n}); it could not be checked for regression")
        verdict = "missing"
    elif gain < -tol:
        if ci is None or ci[1] < 0:
            reasons.append(f"eval '{name}' regressed by {gain:+.3f}, beyond its tolerance {tol:.3f} "
                           f"(95% CI {_fmt_ci(ci)}, n={n})")
            verdict = "regressed"
        else:
            warnings.append(f"eval '{name}' dropped by {gain:+.3f} (tolerance {tol:.3f}) but its 95% CI "
                            f"{_fmt_ci(ci)} includes 0 (n={n})")
            verdict = "possible regression"
    return EvalCheck(eval=name, role="guardrail", gain=gain, ci=ci, n=n, threshold=-tol, verdict=verdict)


def decide(candidate: Mapping[str, Any], settings: GateSettings) -> GateDecision:
    """Apply every gate rule to one report.json candidate entry; collect all reasons and warnings."""
    reasons: list[str] = []
    warnings: list[str] = []
    cid = candidate.get("id")
    if not candidate.get("passed_guards", False):
        reasons.append(f"candidate {cid} did not pass its guard checks")
    evals: Mapping[str, Any] = candidate.get("evals") or {}
    checks = [_check_primary(settings.primary_eval, evals.get(settings.primary_eval), settings, reasons)]
    for name in sorted(evals):
        if name != settings.primary_eval:
            checks.append(_check_guardrail(name, evals[name], settings, reasons, warnings))
    ceiling = settings.max_cost_per_call_usd
    if ceiling is not None:
        cost = _finite((candidate.get("cost") or {}).get("per_call_usd"))
        if cost is None:
            reasons.append(f"cost per call is unknown, so the ceiling ${ceiling:g} cannot be checked "
                           "(set llm.prices for the task model)")
        elif cost > ceiling:
            reasons.append(f"cost per call ${cost:.6f} is above the ceiling ${ceiling:.6f}")
    errors = candidate.get("errors") or {}
    failed = sum(int(errors.get(k) or 0) for k in ("generation", "judgement"))
    if failed:
        warnings.append(f"{failed} call(s) failed during evaluation ({errors}); the estimates exclude them")
    return GateDecision(candidate=cid, passed=not reasons, reasons=tuple(reasons), warnings=tuple(warnings),
                        checks=tuple(checks), settings=settings)


def settings_from_config(gate: Any, primary_eval: str, *, min_improvement: float | None = None,
                         alpha: float = 0.05, comparisons: int = 1) -> GateSettings:
    """GateSettings from the config's `[gate]` section (selfimprove.config.models.Gate), with a flag override;
    `alpha` is the config's `evaluate.alpha`, `comparisons` the number of candidates in the report."""
    return GateSettings(
        primary_eval=primary_eval, alpha=alpha, comparisons=max(1, comparisons),
        min_improvement=gate.min_improvement if min_improvement is None else min_improvement,
        max_regression=dict(gate.max_regression), default_max_regression=gate.default_max_regression,
        max_cost_per_call_usd=gate.max_cost_per_call_usd)


def primary_evidence(candidate: Mapping[str, Any], primary_eval: str) -> dict[str, Any]:
    """`{"eval", "diff", "ci"}` for a build's evidence (`selfimprove log` reads it): raw report values."""
    ev = (candidate.get("evals") or {}).get(primary_eval) or {}
    return {"eval": primary_eval, "diff": ev.get("diff"), "ci": ev.get("ci"), "n": ev.get("n"),
            "direction": ev.get("direction", "maximize"), "baseline_mean": ev.get("baseline_mean"),
            "candidate_mean": ev.get("candidate_mean")}
