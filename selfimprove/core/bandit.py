"""Traffic allocation between the arms of a rollout: deterministic assignment by key, and bandit shares.

Pure: no I/O, no clock; randomness only from an explicit seed.

- `key_point(salt, key)` maps a key (a user or session id) to a point in [0, 1) by hashing, so the same key
  always lands on the same point; `arm_at(point, shares)` lays the arms out on [0, 1) in their given order, each
  over an interval as wide as its share. With the challenger first, raising its share only moves keys *to* it
  (a key already on the challenger stays there): the assignment is sticky while the shares move one way.
- The bandit is batched: the app cannot wait for a judge, so outcomes arrive in batches (each `pull` of judged
  spans) and the shares are recomputed from every arm's totals between batches. `thompson_shares` is
  probability matching (each arm's share is the posterior probability that it is the best, Beta posteriors on a
  score in [0, 1]); `ucb_shares` gives the arm with the highest UCB1 index all traffic but the others' floors.
  A `floor` keeps every arm observed (and so the evidence of the one that loses still growing).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

_SCALE = float(1 << 64)


class ArmTotals(BaseModel):
    """What is known of one arm: `n` judged calls, `total` the sum of their scores (each in [0, 1])."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = Field(0, ge=0)
    total: float = Field(0.0, ge=0)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


def key_point(salt: str, key: str) -> float:
    """The point in [0, 1) a key maps to (the first 8 bytes of sha256(salt, key)); uniform over keys."""
    h = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / _SCALE


def arm_at(point: float, shares: Sequence[tuple[str, float]]) -> str:
    """The arm whose interval holds `point`: arms in the given order, each `share` wide (shares sum to 1; the
    last arm takes any rounding remainder)."""
    edge = 0.0
    for name, share in shares[:-1]:
        edge += share
        if point < edge:
            return name
    return shares[-1][0]


def normalized(shares: Mapping[str, float], floor: float = 0.0) -> dict[str, float]:
    """Shares that sum to 1 with every arm at least `floor` (floor * arms must be at most 1)."""
    k = len(shares)
    if k == 0:
        raise ValueError("no arms")
    if floor * k > 1 + 1e-12:
        raise ValueError(f"a floor of {floor} for {k} arms is more than all the traffic")
    total = sum(max(0.0, s) for s in shares.values())
    raw = {a: (max(0.0, s) / total if total > 0 else 1.0 / k) for a, s in shares.items()}
    free = 1.0 - floor * k
    return {a: floor + free * r for a, r in raw.items()}


def thompson_shares(arms: Mapping[str, ArmTotals], *, floor: float = 0.05, draws: int = 4000,
                    seed: int = 0) -> dict[str, float]:
    """Probability matching: each arm's share is P(its mean is the highest) under Beta(1 + total, 1 + n - total)
    posteriors, estimated from `draws` joint draws (deterministic for a seed), then floored."""
    import numpy as np

    names = list(arms)
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.beta(1.0 + arms[a].total, 1.0 + arms[a].n - min(arms[a].total, arms[a].n), size=draws)
                        for a in names])
    wins = np.bincount(samples.argmax(axis=0), minlength=len(names)) / draws
    return normalized({a: float(w) for a, w in zip(names, wins)}, floor)


def ucb_shares(arms: Mapping[str, ArmTotals], *, floor: float = 0.05, c: float = 2.0) -> dict[str, float]:
    """UCB1 (index mean + sqrt(c ln N / n)): the arm with the highest index gets all traffic but the other arms'
    floors; arms never observed share it equally (their index is infinite). Ties go to the first arm listed."""
    total_n = sum(a.n for a in arms.values())
    untried = [name for name, a in arms.items() if a.n == 0]
    if untried:
        return normalized({name: (1.0 if name in untried else 0.0) for name in arms}, floor)
    index = {name: a.total / a.n + math.sqrt(c * math.log(max(total_n, 2)) / a.n) for name, a in arms.items()}
    best = max(index, key=lambda name: index[name])
    return normalized({name: (1.0 if name == best else 0.0) for name in arms}, floor)
