"""How many samples a comparison needs: the plan behind `selfimprove power` and evaluate's warning.

Model: binary (or [0, 1]) scores, baseline success rate p0, candidate p0 + effect, outcomes of the two policies
independent given the sample (conservative when hard samples are hard for both); or give `sd_diff`, the standard
deviation of one paired difference (e.g. from an earlier run), instead.

- **Clusters** of m samples with intra-cluster correlation ICC (of the paired differences) inflate the variance
  by the design effect 1 + (m - 1) ICC.
- **Noisy judges**: a judge that flips each verdict with probability `judge_flip` shrinks the visible effect to
  effect (1 - 2 flip) and adds flip (1 - flip) / k of variance per policy when k votes are averaged.
- **Level**: alpha is shared by the candidates compared and the planned looks (see multiple.py), one-sided.

`beta` is the sequential test's futility error (evaluate.beta): it stops for futility in about that share of
cases with a real effect, so its power can never exceed 1 - beta; the target power must lie below that.
`n_fixed` is the fixed-size test's need, (z_level + z_power)^2 var DE / effect^2. The decision test is
sequential and truncated at the samples available; `n_sequential` is the smallest size at which its power (its
chance to decide for efficacy, early or at the final analysis) reaches the target (plus three Monte-Carlo standard errors), found by simulating the stopping
rule itself (the decision test) on simulated loss/tie/win clusters with that mean, SD and ICC; `expected_h1` / `expected_h0` are its mean samples used under the
effect and under no effect. Pure: numpy inside the functions; deterministic.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field

PATHS = 3000


class PowerPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_: str = Field("selfimprove.power/1", alias="schema")
    baseline: float | None
    effect: float
    visible_effect: float
    sd_diff: float
    alpha: float
    level: float
    power: float
    beta: float
    cluster_size: int
    icc: float
    design_effect: float
    judge_votes: int
    judge_flip: float
    candidates: int
    looks: int
    n_fixed: int
    n_sequential: int
    clusters_sequential: int
    expected_h1: float
    expected_h0: float


def diff_sd(baseline: float, effect: float, *, judge_flip: float = 0.0, judge_votes: int = 1) -> float:
    """SD of one paired difference for independent binary outcomes seen through a noisy, k-vote judge."""
    p1 = baseline + effect
    if not (0 <= baseline <= 1 and 0 <= p1 <= 1):
        raise ValueError(f"baseline {baseline} and baseline + effect {p1} must lie in [0, 1]")
    shrink = (1 - 2 * judge_flip) ** 2
    noise = judge_flip * (1 - judge_flip) / judge_votes
    return math.sqrt(shrink * (baseline * (1 - baseline) + p1 * (1 - p1)) + 2 * noise)


def plan_fixed(effect: float, sd_diff: float, *, alpha: float = 0.05, power: float = 0.9, cluster_size: int = 1,
               icc: float = 0.0, candidates: int = 1, looks: int = 1) -> int:
    """Samples a fixed-size one-sided test needs: (z_level + z_power)^2 sd^2 DE / effect^2."""
    z = NormalDist().inv_cdf
    level = alpha / (candidates * looks)
    de = 1 + (cluster_size - 1) * icc
    return math.ceil((z(1 - level) + z(power)) ** 2 * sd_diff**2 * de / effect**2)


def simulated_clusters(rng, paths: int, clusters: int, size: int, mean: float, sd: float, icc: float):
    """Simulated cluster-mean paired differences (paths, clusters) with overall mean `mean`, SD `sd` and
    intra-cluster correlation `icc`. Each sample is a loss, tie or win (-1, 0, 1); each cluster shifts its win/loss
    balance by +-gamma (a coin per cluster), gamma^2 = icc sd^2. Where no such loss/tie/win model exists (a large
    ICC with rare wins or losses), cluster means are drawn from the normal model N(mean, sd^2 DE / size), clipped
    to [-1, 1] and rounded to 1 / (2 size)."""
    import numpy as np

    second = sd**2 + mean**2  # E[d^2] = P(win) + P(loss)
    win, loss = (second + mean) / 2, (second - mean) / 2
    gamma = math.sqrt(icc) * sd if size > 1 else 0.0
    if second > 1:
        raise ValueError(f"no paired difference in [-1, 1] has mean {mean:g} and SD {sd:g}")
    if min(win, loss) - gamma / 2 < 0:
        de = 1 + (size - 1) * icc
        z = mean + sd * math.sqrt(de / size) * rng.standard_normal((paths, clusters))
        return np.round(np.clip(z, -1, 1) * 2 * size) / (2 * size)
    shift = np.where(rng.random((paths, clusters, 1)) < 0.5, gamma / 2, -gamma / 2)
    u = rng.random((paths, clusters, size))
    w, lo = win + shift, loss - shift
    d = np.where(u < w, 1.0, np.where(u < w + lo, -1.0, 0.0))
    return d.mean(axis=2)


def stop_curve(clusters: int, size: int, mean: float, sd: float, icc: float, *, level: float, beta: float,
               min_effect: float, seed: int = 0, paths: int = PATHS) -> tuple[object, object, object]:
    """Run the decision test itself on simulated clusters, up to `clusters`: (stop codes, clusters used, the
    chance of deciding for efficacy if truncated at each size g = 0..clusters). Truncating at g changes nothing
    before g, so one run gives the power at every size: the early efficacy stops by g plus, for the paths still
    running at g, the final analysis at g."""
    import numpy as np
    from scipy import stats

    from selfimprove.core.stats.sequential import SEQUENTIAL_SHARE, sequential_paths

    obs = simulated_clusters(np.random.default_rng(seed), paths, clusters, size, mean, sd, icc)
    out = sequential_paths(obs, level=level, beta=beta, min_effect=min_effect, complete=False)
    stop, used = out.stop, out.used
    early = np.cumsum(np.bincount(used[stop == 1], minlength=clusters + 1)) / paths
    g = np.arange(1, clusters + 1)
    s1, s2 = np.cumsum(obs, axis=1), np.cumsum(obs**2, axis=1)
    var = np.maximum(s2 - s1**2 / g, 0) / np.maximum(g - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var > 0, (s1 / g) / np.sqrt(var / g), np.where(s1 > 0, np.inf, -np.inf))
    crit = stats.t.isf((1 - SEQUENTIAL_SHARE) * level, np.maximum(g - 1, 1))
    running = (stop[:, None] == 0) | (used[:, None] > g[None, :])
    final = np.concatenate([[0.0], ((t >= crit[None, :]) & running & (g[None, :] >= 2)).mean(axis=0)])
    return stop, used, early + final


def sequential_power(clusters: int, size: int, mean: float, sd: float, icc: float, *, level: float, beta: float,
                     min_effect: float, seed: int = 0, paths: int = PATHS) -> tuple[float, float]:
    """(chance of an efficacy stop within `clusters` clusters, mean samples used) at true mean `mean`."""
    _, used, by_g = stop_curve(clusters, size, mean, sd, icc, level=level, beta=beta, min_effect=min_effect,
                               seed=seed, paths=paths)
    return float(by_g[-1]), float(used.mean() * size)


def plan(effect: float, *, baseline: float | None = None, sd_diff: float | None = None, alpha: float = 0.05,
         power: float = 0.9, cluster_size: int = 1, icc: float = 0.0, candidates: int = 1, looks: int = 1,
         judge_votes: int = 1, judge_flip: float = 0.0, beta: float = 0.05, seed: int = 0) -> PowerPlan:
    """The sample sizes for detecting `effect` (see the module docstring). Give `baseline` or `sd_diff`."""
    if not 0 < effect < 1:
        raise ValueError(f"effect must lie in (0, 1), got {effect}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must lie in (0, 1)")
    if cluster_size < 1 or not 0 <= icc <= 1 or candidates < 1 or looks < 1 or judge_votes < 1:
        raise ValueError("cluster_size, candidates, looks and judge_votes must be >= 1 and icc within [0, 1]")
    if not 0 <= judge_flip < 0.5:
        raise ValueError(f"judge_flip must lie in [0, 0.5), got {judge_flip}")
    if sd_diff is None:
        if baseline is None:
            raise ValueError("give the baseline success rate or the SD of a paired difference")
        sd_diff = diff_sd(baseline, effect, judge_flip=judge_flip, judge_votes=judge_votes)
    visible = effect * (1 - 2 * judge_flip) if baseline is not None else effect
    level = alpha / (candidates * looks)
    de = 1 + (cluster_size - 1) * icc
    n_fixed = plan_fixed(visible, sd_diff, alpha=alpha, power=power, cluster_size=cluster_size, icc=icc,
                         candidates=candidates, looks=looks)
    if beta >= 1 - power:
        raise ValueError(f"the test's futility error beta={beta} must be below 1 - power = {1 - power:g}: a "
                         "sequential test stops for futility in about beta of the cases where the effect is real")
    design = {"level": level, "beta": min(beta, 0.99 - level), "min_effect": min(visible, 0.99), "seed": seed}

    import numpy as np

    # aim above the target by three Monte-Carlo standard errors, so the plan is not met only half the time
    goal = min(power + 3 * math.sqrt(power * (1 - power) / PATHS), 1 - beta / 2)
    g_max = max(4, math.ceil(2.5 * n_fixed / cluster_size))
    while True:
        _, used, by_g = stop_curve(g_max, cluster_size, visible, sd_diff, icc, **design)
        if by_g.max() >= goal:
            break
        if g_max > 10**5:
            raise ValueError("the effect is too small to detect with any practical sample")
        g_max *= 2
    hi = int(np.argmax(by_g >= goal))
    used_h1 = float(np.minimum(used, hi).mean() * cluster_size)
    _, used0, _ = stop_curve(hi, cluster_size, 0.0, sd_diff, icc, **design)
    used_h0 = float(used0.mean() * cluster_size)
    return PowerPlan(baseline=baseline, effect=effect, visible_effect=round(visible, 6), sd_diff=round(sd_diff, 6),
                     alpha=alpha, level=level, power=power, beta=beta, cluster_size=cluster_size, icc=icc,
                     design_effect=round(de, 6), judge_votes=judge_votes, judge_flip=judge_flip,
                     candidates=candidates, looks=looks, n_fixed=n_fixed, n_sequential=hi * cluster_size,
                     clusters_sequential=hi, expected_h1=round(used_h1, 1),
                     expected_h0=round(used_h0, 1))


def achieved_power(n: int, effect: float, sd_diff: float, *, alpha: float = 0.05, cluster_size: int = 1,
                   icc: float = 0.0, candidates: int = 1, looks: int = 1, beta: float = 0.05, seed: int = 0,
                   paths: int = PATHS) -> float:
    """The sequential test's chance to decide for efficacy (early or at the final analysis) within n samples."""
    level = alpha / (candidates * looks)
    return sequential_power(max(1, n // cluster_size), cluster_size, effect, sd_diff, icc, level=level,
                            beta=min(beta, 0.99 - level), min_effect=min(effect, 0.99), seed=seed, paths=paths)[0]
