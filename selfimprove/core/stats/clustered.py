"""Paired differences that come in clusters (turns of one trace, calls of one session or user).

Samples of one cluster are not independent: a conversation that goes wrong goes wrong on every turn, so n turns
carry less information than n independent samples (the design effect 1 + (m - 1) ICC). Everything here treats the
*cluster* as the unit of resampling and of variance, and reduces to the ordinary paired statistics when every
cluster holds one sample. Pure: numpy and scipy are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

from selfimprove.core.stats.paired import Interval


def cluster_index(clusters: Sequence[Hashable]) -> tuple[Any, int]:
    """(an int array mapping each sample to its cluster, numbered in order of first appearance; cluster count)."""
    import numpy as np

    seen: dict[Hashable, int] = {}
    codes = np.fromiter((seen.setdefault(c, len(seen)) for c in clusters), dtype=np.int64, count=len(clusters))
    return codes, len(seen)


def cluster_sums(diffs: Sequence[float], clusters: Sequence[Hashable]) -> tuple[Any, Any]:
    """(sum of the differences per cluster, samples per cluster), clusters in order of first appearance."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if d.shape != (len(clusters),):
        raise ValueError(f"need one cluster per difference, got {d.shape[0] if d.ndim else 0} and {len(clusters)}")
    codes, g = cluster_index(clusters)
    return np.bincount(codes, weights=d, minlength=g), np.bincount(codes, minlength=g).astype(float)


def cluster_means(diffs: Sequence[float], clusters: Sequence[Hashable]) -> Any:
    """The mean difference of each cluster, in order of first appearance (the sequential test's observations)."""
    sums, sizes = cluster_sums(diffs, clusters)
    return sums / sizes


def cluster_bootstrap(diffs: Sequence[float], clusters: Sequence[Hashable], *, n_resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile CI of the mean paired difference, resampling whole clusters (the ratio estimator: resampled
    sum of differences over resampled sample count). Deterministic for a seed. With one cluster, or no variation
    between clusters' contributions, the interval collapses to the mean. Raises ValueError when empty."""
    import numpy as np

    sums, sizes = cluster_sums(diffs, clusters)
    if sizes.size == 0:
        raise ValueError("cluster_bootstrap needs at least one difference")
    mean = float(sums.sum() / sizes.sum())
    if sizes.size < 2 or np.ptp(sums - mean * sizes) == 0.0:
        return Interval(mean_diff=mean, low=mean, high=mean, confidence=confidence)
    rng = np.random.default_rng(seed)
    g = sizes.size
    stats = np.empty(n_resamples)
    for start in range(0, n_resamples, 500):  # bounded memory: 500 x g indices at a time
        pick = rng.integers(0, g, size=(min(500, n_resamples - start), g))
        stats[start:start + pick.shape[0]] = sums[pick].sum(1) / sizes[pick].sum(1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(mean_diff=mean, low=min(float(low), mean), high=max(float(high), mean), confidence=confidence)


class ClusteredMean:
    """The mean paired difference with its cluster-robust (CR1) standard error and one-sided t tests (G - 1 df)."""

    def __init__(self, diffs: Sequence[float], clusters: Sequence[Hashable]):
        import numpy as np

        sums, sizes = cluster_sums(diffs, clusters)
        self.n, self.clusters = int(sizes.sum()), int(sizes.size)
        self.mean = float(sums.sum() / sizes.sum()) if self.n else math.nan
        g = self.clusters
        if g < 2:
            self.se = math.nan
        else:  # sandwich: residual sums per cluster, small-sample factor g / (g - 1)
            resid = sums - self.mean * sizes
            self.se = float(np.sqrt(g / (g - 1) * (resid**2).sum()) / self.n)

    def p_below(self, bound: float = 0.0) -> float:
        """One-sided p for H0: mean >= bound against mean < bound (small p: the mean is below the bound)."""
        return self._p(bound - self.mean)

    def p_above(self, bound: float = 0.0) -> float:
        """One-sided p for H0: mean <= bound against mean > bound."""
        return self._p(self.mean - bound)

    def _p(self, distance: float) -> float:
        from scipy import stats

        if self.clusters < 2 or not math.isfinite(self.se):
            return 1.0
        if self.se == 0.0:
            return 0.0 if distance > 0 else 1.0
        return float(stats.t.sf(distance / self.se, self.clusters - 1))


def icc_anova(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """One-way ANOVA estimate of the intra-cluster correlation, clipped to [0, 1]; 0 without repeated clusters."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    sums, sizes = cluster_sums(v, clusters)
    g, n = sizes.size, v.size
    if g < 2 or n <= g:
        return 0.0
    codes, _ = cluster_index(clusters)
    means = sums / sizes
    msb = float((sizes * (means - v.mean()) ** 2).sum() / (g - 1))
    msw = float(((v - means[codes]) ** 2).sum() / (n - g))
    m0 = (n - float((sizes**2).sum()) / n) / (g - 1)
    if msb + (m0 - 1) * msw <= 0:
        return 0.0
    return min(1.0, max(0.0, (msb - msw) / (msb + (m0 - 1) * msw)))
