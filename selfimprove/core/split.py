"""Train/test split by trace, stratified by score. Pure: no I/O, no clock, no global random state.

Invariants (property-tested in tests/test_snapshot_split.py):
- a trace is never on both sides: every sample of a trace gets the same split;
- the result depends only on the items and the seed (not on their order, not on PYTHONHASHSEED);
- the test share of samples is close to `test_size` (within one trace's size of the target);
- with at least two traces, both sides are non-empty.
Traces are stratified by the mean of their primary score (missing scores form their own stratum; continuous
scores are binned into quartiles) so that both sides see good and bad examples in the same proportion.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SplitItem:
    sample_id: str
    trace_id: str
    score: float | None = None


def _rank(seed: int, key: str) -> bytes:
    # the raw digest orders as its hex form did, in half the memory (a key per trace when a snapshot splits)
    return hashlib.sha256(f"{seed}\x00{key}".encode()).digest()


def seeded_order(keys: Iterable[str], seed: int) -> list[str]:
    """`keys` in a pseudo-random order that depends only on the seed and the keys themselves."""
    return sorted(set(keys), key=lambda k: (_rank(seed, k), k))


_QUARTILES = [f"q{n}" for n in range(5)]


def _strata(trace_scores: dict[str, float | None], bins: int = 4) -> dict[str, str]:
    """Trace -> stratum name. Few distinct scores: one stratum per value; many: quantile bins."""
    known = sorted({s for s in trace_scores.values() if s is not None})
    if len(known) <= bins:
        return {t: ("none" if s is None else sys.intern(f"={s!r}")) for t, s in trace_scores.items()}  # one each
    ordered = sorted(s for s in trace_scores.values() if s is not None)
    cuts = [ordered[min(len(ordered) - 1, (len(ordered) * q) // bins)] for q in range(1, bins)]
    out = {}
    for trace, score in trace_scores.items():
        out[trace] = "none" if score is None else _QUARTILES[sum(score >= c for c in cuts)]
    return out


def split_by_trace(items: Sequence[SplitItem], test_size: float, seed: int = 0) -> dict[str, str]:
    """Sample id -> "train" or "test"."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    sizes: dict[str, int] = {}
    scores: dict[str, list[float]] = {}
    for item in items:
        sizes[item.trace_id] = sizes.get(item.trace_id, 0) + 1
        if item.score is not None and math.isfinite(item.score):
            scores.setdefault(item.trace_id, []).append(item.score)
    trace_score = {t: (sum(scores[t]) / len(scores[t]) if t in scores else None) for t in sizes}
    strata = _strata(trace_score)
    by_stratum: dict[str, list[str]] = {}
    for trace in seeded_order(sizes, seed):
        by_stratum.setdefault(strata[trace], []).append(trace)
    test: set[str] = set()
    seen = taken = 0
    for name in sorted(by_stratum, key=lambda n: _rank(seed, n)):
        for trace in by_stratum[name]:
            # carry the rounding error across strata so the overall share tracks test_size
            seen += sizes[trace]
            if abs(taken + sizes[trace] - test_size * seen) < abs(taken - test_size * seen):
                test.add(trace)
                taken += sizes[trace]
    if len(sizes) >= 2 and (not test or len(test) == len(sizes)):
        order = seeded_order(sizes, seed)
        if not test:
            test.add(min(order, key=lambda t: (sizes[t], order.index(t))))
        elif len(test) == len(sizes):
            test.discard(min(order, key=lambda t: (sizes[t], order.index(t))))
    return {item.sample_id: ("test" if item.trace_id in test else "train") for item in items}
