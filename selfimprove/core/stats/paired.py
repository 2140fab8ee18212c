"""Paired comparisons of two policies on the same samples: pairing, differences, the interval record.

Inputs are two equal-length sequences of scores, position i of each being the same sample scored under the
baseline and under the candidate. `None` or NaN marks a missing score (a failed call or judgement);
`complete_pairs` drops such pairs. The interval and tests on the differences are cluster-aware (clustered.py),
the decision test sequential (sequential.py). Pure: no I/O, no clock; numpy is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interval(_Frozen):
    """A mean paired difference (candidate - baseline) with its confidence interval."""

    mean_diff: float
    low: float
    high: float
    confidence: float = 0.95


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def complete_pairs(
    baseline: Sequence[float | None], candidate: Sequence[float | None]
) -> tuple[list[float], list[float]]:
    """The pairs where both scores are present, as two float lists (order kept)."""
    if len(baseline) != len(candidate):
        raise ValueError(f"paired scores need equal lengths, got {len(baseline)} and {len(candidate)}")
    kept = [(float(b), float(c)) for b, c in zip(baseline, candidate) if not (_missing(b) or _missing(c))]
    return [b for b, _ in kept], [c for _, c in kept]


def paired_differences(baseline: Sequence[float], candidate: Sequence[float]):
    """candidate - baseline as a float numpy array; raises ValueError on unequal lengths or missing values."""
    import numpy as np

    b = np.asarray(baseline, dtype=float)
    c = np.asarray(candidate, dtype=float)
    if b.shape != c.shape or b.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D lengths, got {b.shape} and {c.shape}")
    if np.isnan(b).any() or np.isnan(c).any():
        raise ValueError("paired scores contain NaN; drop incomplete pairs first (complete_pairs)")
    return c - b
