"""The one test that decides promotion: a sequential probability ratio test on cluster-mean paired differences.

Observations are clusters in evaluation order (a cluster's observation is the mean of its samples' paired
differences on the normalised primary eval; with one sample per cluster this is the per-sample SPRT of
`selfimprove.core.stats.sprt`). After each cluster the generalised LLR of H1 (mean >= min_effect) against H0
(mean <= 0) is updated (the empirical-likelihood statistic of sprt.py). The test stops:

- for **efficacy** once LLR >= log(1 / (SEQUENTIAL_SHARE level)): by Ville's inequality the chance that the LLR
  ever gets there under H0 is at most SEQUENTIAL_SHARE level, however often it is looked at;
- for **futility** once LLR <= log(beta / (1 - level)) (Wald's lower bound): a gain of min_effect is unlikely;
- when the planned clusters run out: then a **final analysis**, the one-sided t test of the cluster means
  (G - 1 df) at the remaining (1 - SEQUENTIAL_SHARE) level, decides. It rescues a small held-out set with a
  large effect, where a test designed for min_effect has not yet gathered log(1/level) of evidence. It is only
  run when every planned cluster was evaluated (not after a budget stop), so its size is fixed in advance.

Its **p-value** is the weighted-Bonferroni combination p = min(1, p_seq / s, p_final / (1 - s)), s the share,
p_seq = exp(-max LLR so far) and p_final = 1 unless the final analysis ran. p <= level exactly when the test
decided for efficacy (early or at the final analysis), and by the union bound P(p <= level | H0) <= level: the
gate's decision and the p-value shown in the report are the same number. `level` is the share of alpha this
comparison may spend (alpha divided by the candidates compared and the planned looks, see `multiple`).

`sequential_paths` runs many paths at once (the benchmark's simulations call it directly); `sequential_test`
is one path with its reason and estimates. Pure: numpy is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Stop = Literal["efficacy", "final", "futility", "exhausted"]
SEQUENTIAL_SHARE = 0.8  # of the level, for the sequential efficacy bound; the rest for the final analysis
TEST_NAME = ("SPRT on cluster-mean paired differences (empirical likelihood, Ville bound at 0.8 alpha) with a "
             "final t test at 0.2 alpha")


def sequential_bounds(level: float, beta: float) -> tuple[float, float]:
    """(futility bound log(beta / (1 - level)), efficacy bound log(1 / (SEQUENTIAL_SHARE level)))."""
    if not (0 < level < 1 and 0 < beta < 1 and level + beta < 1):
        raise ValueError(f"need 0 < level, beta and level + beta < 1, got level={level}, beta={beta}")
    return math.log(beta / (1 - level)), math.log(1 / (SEQUENTIAL_SHARE * level))


class PathOutcomes(BaseModel):
    """Per path: stop code (1 efficacy, 2 efficacy at the final analysis, -1 futility, 0 undecided), observations
    used, p-value, LLR at the stop."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    stop: Any
    used: Any
    p_value: Any
    llr: Any


def sequential_paths(observations: Any, *, level: float, beta: float, min_effect: float, chunk: int = 32,
                     complete: bool = True) -> PathOutcomes:
    """Run the test on each row of `observations` (R, G): cluster-mean differences in [-1, 1], in order.

    Vectorised: the LLR depends only on how often each distinct value was seen, so it is computed once per
    distinct count vector; paths that stopped drop out. Exact for any values (they are the distinct values seen).
    `complete` False: the rows are not all the planned clusters (a budget stop), so no final analysis.
    """
    import numpy as np

    from selfimprove.core.stats.sprt import llr_from_counts

    obs = np.atleast_2d(np.asarray(observations, dtype=float))
    if obs.size and (np.isnan(obs).any() or obs.min() < -1 or obs.max() > 1):
        raise ValueError("observations must be paired differences in [-1, 1] without missing values")
    r, g = obs.shape
    lower, upper = sequential_bounds(level, beta)
    stop = np.zeros(r, dtype=int)
    used = np.full(r, g)
    max_llr = np.zeros(r)
    last = np.zeros(r)
    if g == 0:
        return PathOutcomes(stop=stop, used=used, p_value=np.ones(r), llr=last)
    values, codes = np.unique(obs, return_inverse=True)
    codes = codes.reshape(r, g)
    k = values.size
    counts = np.zeros((r, k), dtype=np.int64)
    active = np.arange(r)
    exact_keys = k * math.log2(g + 1) < 52  # a unique float key per count vector while (g+1)^k < 2^53
    base = (g + 1) ** np.arange(k, dtype=float) if exact_keys else None
    for start in range(0, g, chunk):
        step = np.eye(k, dtype=np.int64)[codes[active, start:start + chunk]]  # (a, c, k)
        cum = counts[active][:, None, :] + np.cumsum(step, axis=1)
        flat = cum.reshape(-1, k)
        if exact_keys:
            _, first, inverse = np.unique(flat @ base, return_index=True, return_inverse=True)
            llr = llr_from_counts(values, flat[first], min_effect)[inverse].reshape(cum.shape[:2])
        else:
            llr = llr_from_counts(values, flat, min_effect).reshape(cum.shape[:2])
        up, down = llr >= upper, llr <= lower
        hit = up | down
        any_hit = hit.any(1)
        first_hit = np.where(any_hit, hit.argmax(1), llr.shape[1] - 1)
        upto = np.arange(llr.shape[1])[None, :] <= first_hit[:, None]
        max_llr[active] = np.maximum(max_llr[active], np.where(upto, llr, -np.inf).max(1))
        last[active] = llr[np.arange(active.size), first_hit]
        code = np.where(np.take_along_axis(up, first_hit[:, None], 1)[:, 0], 1, -1)
        stop[active[any_hit]] = code[any_hit]
        used[active[any_hit]] = start + first_hit[any_hit] + 1
        counts[active] = cum[:, -1, :]
        active = active[~any_hit]
        if active.size == 0:
            break
    p_value = np.minimum(1.0, np.exp(-max_llr) / SEQUENTIAL_SHARE)
    open_ = stop == 0
    if complete and g >= 2 and open_.any():
        from scipy import stats

        x = obs[open_]
        sd = x.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(sd > 0, x.mean(1) / sd * math.sqrt(g), np.where(x.mean(1) > 0, np.inf, -np.inf))
        p_final = stats.t.sf(t, g - 1)
        p_value[open_] = np.minimum(p_value[open_], p_final / (1 - SEQUENTIAL_SHARE))
        stop[np.flatnonzero(open_)[p_final <= (1 - SEQUENTIAL_SHARE) * level]] = 2
    return PathOutcomes(stop=stop, used=used, p_value=np.minimum(1.0, p_value), llr=last)


class SequentialResult(BaseModel):
    """One comparison's sequential test: the decision, why and when it stopped, its p-value and estimates."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    test: str = TEST_NAME
    level: float
    beta: float
    min_effect: float
    stop: Stop
    decision: Literal["accept_h1", "accept_h0", "continue"]
    p_value: float
    llr: float
    n_used: int  # samples up to and including the cluster at which the test stopped
    n_available: int  # samples the test could have used (evaluated, complete pairs)
    clusters_used: int
    clusters_available: int
    estimate: float | None  # mean paired difference over the samples used
    estimate_corrected: float | None  # the same, adjusted for the bias of stopping early (see stopping.py)

    def reason(self) -> str:
        at = (f"n = {self.n_used} of {self.n_available} samples ({self.clusters_used} of "
              f"{self.clusters_available} clusters)")
        if self.stop == "efficacy":
            return f"decided at {at}: better by at least {self.min_effect:g} (p = {self.p_value:.4g} <= {self.level:.4g})"
        if self.stop == "final":
            return (f"decided at the final analysis, after all {at}: better (p = {self.p_value:.4g} <= "
                    f"{self.level:.4g})")
        if self.stop == "futility":
            return f"stopped for futility at {at}: a gain of {self.min_effect:g} is unlikely (p = {self.p_value:.4g})"
        return (f"undecided after all {self.n_available} samples ({self.clusters_available} clusters): "
                f"p = {self.p_value:.4g} > {self.level:.4g}")


def sequential_test(diffs: Sequence[float], clusters: Sequence[Hashable], *, level: float, beta: float,
                    min_effect: float, seed: int = 0, n_available: int | None = None,
                    clusters_available: int | None = None) -> SequentialResult:
    """The test on one comparison: `diffs` are the paired differences (normalised, in [-1, 1]) in evaluation
    order, `clusters` each sample's cluster. Clusters enter in order of first appearance. `n_available` and
    `clusters_available` are the size of the whole held-out set (where the test would have been truncated;
    default: the pairs given)."""
    import numpy as np

    from selfimprove.core.stats.clustered import cluster_index, cluster_sums
    from selfimprove.core.stats.stopping import bias_adjusted_mean

    d = np.asarray(diffs, dtype=float)
    sums, sizes = cluster_sums(d, clusters)
    means = sums / np.where(sizes > 0, sizes, 1)
    complete = clusters_available is None or means.size >= clusters_available
    out = sequential_paths(means[None, :], level=level, beta=beta, min_effect=min_effect, complete=complete)
    code, used = int(out.stop[0]), int(out.used[0])
    stop: Stop = {1: "efficacy", 2: "final", -1: "futility", 0: "exhausted"}[code]
    decision = {1: "accept_h1", 2: "accept_h1", -1: "accept_h0", 0: "continue"}[code]
    codes, _ = cluster_index(clusters)
    in_use = codes < used
    n_used = int(in_use.sum())
    estimate = float(d[in_use].mean()) if n_used else None
    corrected = estimate
    g_max = max(int(means.size), clusters_available or 0)
    if estimate is not None and used >= 2:
        corrected = bias_adjusted_mean(float(means[:used].mean()), float(means[:used].std(ddof=1)), used,
                                       g_max, level=level, beta=beta, min_effect=min_effect, seed=seed)
        corrected = estimate + (corrected - float(means[:used].mean()))
    return SequentialResult(level=level, beta=beta, min_effect=min_effect, stop=stop, decision=decision,
                            p_value=float(out.p_value[0]), llr=float(out.llr[0]), n_used=n_used,
                            n_available=max(int(d.size), n_available or 0), clusters_used=used,
                            clusters_available=g_max,
                            estimate=estimate, estimate_corrected=corrected)


class SequentialMonitor:
    """The test run live while evaluating: `add` each paired difference with its cluster, `check` after each
    batch (leaving out the cluster still being filled), read `decision`. Once decided, later pairs are ignored.
    The report re-runs `sequential_test` on the same pairs, in the same order, and reaches the same stop."""

    def __init__(self, level: float, beta: float, min_effect: float):
        sequential_bounds(level, beta)  # validate now, not mid-evaluation
        self.level, self.beta, self.min_effect = level, beta, min_effect
        self.decision: Literal["accept_h1", "accept_h0", "continue"] = "continue"
        self._diffs: list[float] = []
        self._clusters: list[Hashable] = []

    def add(self, diff: float, cluster: Hashable) -> None:
        if self.decision == "continue":
            self._diffs.append(float(diff))
            self._clusters.append(cluster)

    def check(self, open_cluster: Hashable | None = None) -> str:
        """Run the test on every finished cluster so far; `open_cluster` has samples still to come."""
        import numpy as np

        from selfimprove.core.stats.clustered import cluster_means

        if self.decision != "continue":
            return self.decision
        keep = [i for i, c in enumerate(self._clusters) if open_cluster is None or c != open_cluster]
        if not keep:
            return self.decision
        means = cluster_means([self._diffs[i] for i in keep], [self._clusters[i] for i in keep])
        out = sequential_paths(np.asarray(means)[None, :], level=self.level, beta=self.beta,
                               min_effect=self.min_effect, complete=False)  # the final analysis is the report's
        self.decision = {1: "accept_h1", -1: "accept_h0", 0: "continue"}[int(out.stop[0])]
        return self.decision
