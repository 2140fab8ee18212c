"""What a score means: the one normalisation every consumer uses (update, evaluate, the gate, the report).

A judge or code eval reports a raw score in its own units (its rails' scores, e.g. {"correct": 1, "incorrect": 0},
or any number). Everything that compares policies works on the **normalised score**:

- **scale**: mapped linearly onto [0, 1] through the range of the eval's rails (`EvalSpec.choices`), so a
  {0, 5, 10} judge and a {0, 1} judge mean the same thing at their ends; without rails the raw score is used;
- **clamp**: values outside [0, 1] after scaling (a code eval that overshoots, a rail score out of its range)
  are clamped to the nearest end, so every paired difference lies in [-1, 1] (the sequential test needs that);
- **direction**: 1 is always best: a "minimize" eval is flipped (1 - s);
- **missing**: a missing verdict (None or NaN: a failed call, a judge that gave no parseable answer) stays
  **missing** (`normalize` returns None). It is never silently turned into a number here.

Where a consumer needs a number for every sample it says so explicitly, through the functions below:
`reward` (the optimizer's per-sample aggregate) counts a missing verdict as 0 — the worst score — so that a
candidate can never gain by making calls fail. The paired statistics (evaluate, the gate, the report) instead
drop a pair with a missing side and count it (`n_dropped` in report.json), so a flaky judge does not bias the
difference, and the count is shown beside every decision.

Changing anything here changes every reported mean and every gate decision: tests/test_scores.py pins it.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from selfimprove.core.records import EvalSpec

MISSING_REWARD = 0.0  # what `reward` counts a missing verdict as (the worst normalised score)


def is_missing(score: Any) -> bool:
    """True for None and NaN (a failed or absent verdict)."""
    return score is None or (isinstance(score, float) and math.isnan(score))


def normalize(score: float | None, spec: EvalSpec) -> float | None:
    """The raw score of `spec` as a normalised score in [0, 1], 1 best; None when the score is missing."""
    if is_missing(score):
        return None
    s = float(score)  # type: ignore[arg-type]
    if spec.choices:
        lo, hi = min(spec.choices.values()), max(spec.choices.values())
        s = (s - lo) / (hi - lo) if hi > lo else s
    s = min(1.0, max(0.0, s))
    return 1.0 - s if spec.direction == "minimize" else s


def normalize_or_worst(score: float | None, spec: EvalSpec) -> float:
    """`normalize`, with a missing score counted as the worst (0): for a number the optimizer can rank."""
    value = normalize(score, spec)
    return MISSING_REWARD if value is None else value


def reward(scores: Mapping[str, float | None], evals: Sequence[EvalSpec],
           weights: Mapping[str, float] | None = None) -> float:
    """The optimizer's per-sample reward: the mean over `evals` of the normalised score, a missing one counted
    as 0, weighted by `weights` (eval name -> weight >= 0; an eval not named weighs 1). `scores` maps eval name
    -> raw score (absent = missing). 0.0 with no eval or no weight."""
    w = [1.0 if weights is None else float(weights.get(spec.name, 1.0)) for spec in evals]
    if not evals or sum(w) <= 0:
        return 0.0
    return sum(wi * normalize_or_worst(scores.get(spec.name), spec) for wi, spec in zip(w, evals, strict=True)) / sum(w)
