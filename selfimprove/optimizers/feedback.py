"""Feedback for one update step: a minibatch of scored samples, mostly failures and low scores with a few
successes (so that good behaviour is kept), optionally focused on one failure cluster; rendered as feedback items.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import EvalSpec, Sample
from selfimprove.optimizers.base import ScoredSample, Verdict
from selfimprove.optimizers.taxonomy import FailureCluster

SUCCESS_SHARE = 0.25  # of a minibatch, when successes exist


def stored_rows(samples: Sequence[Sample], evals: Sequence[EvalSpec]) -> list[ScoredSample]:
    """The production verdicts already in the checkpoint, as scored rows (free feedback for the current policy).
    Samples without an output or without any eval verdict are skipped. Pass the feedback-only evals in `evals`
    too to keep their verdicts (people's labels)."""
    rows = []
    for s in samples:
        if s.output is None or not any(spec.name in s.evals for spec in evals):
            continue
        verdicts = {name: Verdict(score=r.score, label=r.label, explanation=r.explanation)
                    for name, r in s.evals.items() if any(spec.name == name for spec in evals)}
        rows.append(ScoredSample(sample_id=s.sample_id, history=s.history, output=s.output.output_text(),
                                 verdicts=verdicts))
    return rows


def minibatch(rows: Sequence[ScoredSample], evals: Sequence[EvalSpec], size: int, rng: random.Random,
              focus: FailureCluster | None = None, stored: Sequence[EvalSpec] = ()) -> list[ScoredSample]:
    """Up to `size` rows: failures first (those of `focus` first when given, then the lowest scores), plus about a
    quarter successes when there are any. A row that a feedback-only (`stored`) eval failed is a failure too (a
    person said no where the judge said yes). Deterministic for a given rng state."""
    rows = sorted(rows, key=lambda r: r.sample_id)
    failing = [r for r in rows if r.failed_evals(evals, stored)]
    passing = [r for r in rows if not r.failed_evals(evals, stored)]
    n_success = min(len(passing), max(1, round(size * SUCCESS_SHARE))) if passing and failing else 0
    if not failing:
        n_success = min(len(passing), size)
    n_fail = min(len(failing), size - n_success)
    if focus is not None:
        inside = [r for r in failing if r.sample_id in set(focus.sample_ids)]
        outside = [r for r in failing if r.sample_id not in set(focus.sample_ids)]
        rng.shuffle(inside)
        rng.shuffle(outside)
        chosen = (inside + sorted(outside, key=lambda r: r.value(evals)))[:n_fail]
    else:
        # weight low scores up: sample without replacement, keys ~ U^(1/w) (Efraimidis-Spirakis)
        keyed = [(rng.random() ** (1.0 / (1.05 - r.value(evals))), r) for r in failing]
        chosen = [r for _, r in sorted(keyed, key=lambda kr: -kr[0])[:n_fail]]
    chosen += rng.sample(passing, n_success) if n_success else []
    return chosen


def input_text(history: Sequence[Any]) -> str:
    """The sample's input as the optimizer sees it: the non-system messages, role-prefixed when there are several."""
    msgs = [m for m in history if getattr(m, "role", None) not in ("system", "developer")]
    if len(msgs) == 1:
        return msgs[0].text()
    return "\n".join(f"[{m.role}] {m.text()}" for m in msgs)


def feedback_items(rows: Sequence[ScoredSample], evals: Sequence[EvalSpec], prefix: str = "F",
                   stored: Sequence[EvalSpec] = ()) -> list[dict]:
    """Feedback items for the meta-prompt, ids F1..Fn in the given order. The verdicts of the feedback-only
    (`stored`) evals are shown where present; the score is over the replayed `evals` only."""
    items = []
    for i, r in enumerate(rows, 1):
        verdicts = []
        for spec in (*evals, *stored):
            v = r.verdicts.get(spec.name)
            if v is not None:
                verdicts.append((spec.name, v.label or (f"{v.score:g}" if v.score is not None else "missing"),
                                 v.explanation or ""))
        if r.error:
            verdicts.append(("call", "error", r.error))
        items.append({"id": f"{prefix}{i}", "sample_id": r.sample_id, "input": input_text(r.history),
                      "output": r.output, "verdicts": verdicts, "score": r.value(evals)})
    return items
