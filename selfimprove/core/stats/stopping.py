"""The effect estimate corrected for early stopping (Whitehead's bias-adjusted estimate).

A test that stops as soon as the evidence is strong stops on a lucky streak more often than on an unlucky one,
so the mean at the stop overstates the effect (and understates it after a futility stop). Whitehead (1986):
with b(mu) = E_mu[mean at the stop] - mu the bias of the design at a true mean mu, the adjusted estimate is the
mu~ that solves mu~ + b(mu~) = observed mean.

b is computed by simulation of the same stopping rule with its LLR in Gaussian form (cluster means ~ N(mu, sd^2):
LLR_j = (delta * S_j - j * delta^2 / 2) / sd^2, the local form of the empirical-likelihood LLR), over common
random numbers fixed by `seed`, so the estimate is deterministic. Pure: numpy inside the function.
"""

from __future__ import annotations

import math

PATHS = 2000


def stopping_bias(mu: float, sd: float, max_clusters: int, *, level: float, beta: float, min_effect: float,
                  seed: int = 0, paths: int = PATHS) -> float:
    """E_mu[mean at the stop] - mu for the sequential test truncated at `max_clusters` observations."""
    import numpy as np

    from selfimprove.core.stats.sequential import sequential_bounds

    lower, upper = sequential_bounds(level, beta)
    rng = np.random.default_rng(seed)
    total = np.zeros(paths)
    stopped_mean = np.full(paths, np.nan)
    alive = np.ones(paths, dtype=bool)
    done = 0
    while done < max_clusters and alive.any():
        step = min(64, max_clusters - done)
        z = mu + sd * rng.standard_normal((paths, step))  # drawn for every path: common numbers across mu
        cum = total[:, None] + np.cumsum(z, axis=1)
        j = done + np.arange(1, step + 1)
        llr = (min_effect * cum - j * min_effect**2 / 2) / sd**2
        hit = ((llr >= upper) | (llr <= lower)) & alive[:, None]
        any_hit = hit.any(1)
        first = hit.argmax(1)
        rows = np.flatnonzero(any_hit)
        stopped_mean[rows] = cum[rows, first[rows]] / j[first[rows]]
        alive &= ~any_hit
        total = cum[:, -1]
        done += step
    stopped_mean = np.where(np.isnan(stopped_mean), total / max(done, 1), stopped_mean)
    return float(stopped_mean.mean() - mu)


def bias_adjusted_mean(observed: float, sd: float, used: int, max_clusters: int, *, level: float, beta: float,
                       min_effect: float, seed: int = 0, iterations: int = 6) -> float:
    """Whitehead's estimate: solve mu + b(mu) = observed by fixed-point iteration (b varies slowly in mu).

    `observed` and `sd` are the mean and standard deviation of the cluster means up to the stop, `used` how
    many there were, `max_clusters` how many the test could have seen. With no spread (sd 0) or a single
    observation there is nothing to adjust. The result is kept within [-1, 1].
    """
    if not (math.isfinite(sd) and sd > 0) or used < 2 or max_clusters < 2:
        return observed
    mu = observed
    for _ in range(iterations):
        nxt = observed - stopping_bias(mu, sd, max_clusters, level=level, beta=beta, min_effect=min_effect, seed=seed)
        nxt = min(1.0, max(-1.0, nxt))
        if abs(nxt - mu) < 1e-4:
            mu = nxt
            break
        mu = nxt
    return mu
