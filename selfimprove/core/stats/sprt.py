"""A sequential probability ratio test on paired scores that stops as soon as the answer is clear.

Data: pairs (b_i, c_i) of scores in `score_range` (default [0, 1]) for the same sample under the baseline
and the candidate; the test looks at the paired differences d_i = c_i - b_i, which lie in [lo-hi, hi-lo]
(default [-1, 1]). Binary scores give d in {-1, 0, 1} (a loss, a tie, a win); judge rails such as
{0, 0.5, 1} and continuous scores are handled by the same statistic.

Hypotheses, with mu = E[d], the expected gain of the candidate on this eval:
    H0: mu <= 0            (no improvement)
    H1: mu >= min_effect   (an improvement of at least delta, 0.15 by default)

Statistic (a generalized SPRT, as Stockfish's fishtest runs on trinomial game outcomes): after n pairs,
    LLR_n = log L(delta) - log L(0),
where L(mu) is the largest likelihood of the observed differences over *all* distributions on the
difference's range with mean mu (the nonparametric, or empirical, likelihood with the range's endpoints
allowed to carry mass). For binary scores this is exactly the trinomial (win/tie/loss) likelihood ratio with
the tie rate profiled out, so ties count as evidence (of a small effect) instead of being dropped, and no
normal approximation or variance estimate is involved: a run of early ties cannot look "certain".

Decision (Wald's bounds): accept H1 once LLR_n >= log((1 - beta) / alpha); accept H0 once
LLR_n <= log(beta / (1 - alpha)); otherwise continue. Under H0 the false-positive rate is at most about
alpha, under mu = delta the power is about 1 - beta (validated by simulation in tests/test_stats.py). Once a
decision is reached it is final: later updates are ignored (calls in flight at the stop may still report).
If the data run out first the decision stays "continue" (inconclusive): report the bootstrap CI instead.

Pure: no I/O; numpy is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Decision = Literal["continue", "accept_h1", "accept_h0"]


class SPRTResult(BaseModel):
    """The outcome of a sequential test: the decision, the pairs it used, the final LLR and the bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    decision: Decision
    n_used: int
    llr: float
    bounds: tuple[float, float]  # (lower: accept H0 at or below, upper: accept H1 at or above)
    mean_diff: float | None
    alpha: float
    beta: float
    min_effect: float


def wald_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """(log(beta / (1 - alpha)), log((1 - beta) / alpha))."""
    if not (0 < alpha < 1 and 0 < beta < 1 and alpha + beta < 1):
        raise ValueError(f"need 0 < alpha, beta and alpha + beta < 1, got alpha={alpha}, beta={beta}")
    return math.log(beta / (1 - alpha)), math.log((1 - beta) / alpha)


def constrained_log_likelihood(values: Any, counts: Any, mu: float, lo: float = -1.0, hi: float = 1.0) -> Any:
    """log max L(distributions on [lo, hi] with mean mu) - log max L(any distribution); always <= 0.

    `values` (k,) are distinct observed values in [lo, hi]; `counts` (..., k) how often each was seen
    (vectorised over leading axes, so simulations can evaluate many sample paths at once). The maximiser puts
    weight c_j / (n (1 + lam (x_j - mu))) on each value and any remaining mass on an endpoint; lam solves
    sum_j c_j (x_j - mu) / (1 + lam (x_j - mu)) = 0 by safeguarded Newton on the feasible interval.
    """
    import numpy as np

    if not lo < mu < hi:
        raise ValueError(f"mu={mu} must lie strictly inside ({lo}, {hi})")
    x = np.asarray(values, dtype=float)
    counts = np.asarray(counts, dtype=float)
    shape = counts.shape[:-1]
    c = counts.reshape(-1, x.size)
    z = x - mu
    obs = c > 0
    lam_hi_end, lam_lo_end = -1.0 / (hi - mu), 1.0 / (mu - lo)  # lam that puts free mass on hi / on lo

    def g_and_slope(lam, rows):
        den = np.where(obs[rows], 1.0 + lam[:, None] * z, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(obs[rows], c[rows] * z / den, 0.0).sum(-1)
            slope = -np.where(obs[rows], c[rows] * z * z / den**2, 0.0).sum(-1)
        return g, slope

    every = np.arange(c.shape[0])
    g_a = np.where((obs & (x >= hi)).any(-1), np.inf, g_and_slope(np.full(every.size, lam_hi_end), every)[0])
    g_b = np.where((obs & (x <= lo)).any(-1), -np.inf, g_and_slope(np.full(every.size, lam_lo_end), every)[0])
    # When the root lies outside the feasible interval the constraint puts mass on an endpoint: clamp.
    lam = np.where(g_a <= 0, lam_hi_end, np.where(g_b >= 0, lam_lo_end, 0.0))
    active = every[(g_a > 0) & (g_b < 0) & (obs.sum(-1) > 0)]
    a, b = np.full(active.size, lam_hi_end), np.full(active.size, lam_lo_end)
    for _ in range(100):  # safeguarded Newton (the root is bracketed by [a, b]); converged rows drop out
        if active.size == 0:
            break
        cur = lam[active]
        g, slope = g_and_slope(cur, active)
        a, b = np.where(g > 0, cur, a), np.where(g > 0, b, cur)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(slope < 0, cur - g / slope, cur)
        new = np.where((step > a) & (step < b), step, 0.5 * (a + b))
        new = np.where(g == 0, cur, new)
        lam[active] = new
        moving = np.abs(new - cur) > 1e-12 * (1.0 + np.abs(cur))
        active, a, b = active[moving], a[moving], b[moving]
    den = np.where(obs, 1.0 + lam[:, None] * z, 1.0)
    out = -np.where(obs, c * np.log(np.maximum(den, 1e-300)), 0.0).sum(-1)
    return out.reshape(shape)


def llr_from_counts(values: Any, counts: Any, min_effect: float, lo: float = -1.0, hi: float = 1.0) -> Any:
    """LLR of H1 (mean = min_effect) against H0 (mean = 0) for differences summarised as value counts."""
    return constrained_log_likelihood(values, counts, min_effect, lo, hi) - constrained_log_likelihood(
        values, counts, 0.0, lo, hi
    )


def first_crossing(llr_paths: Any, bounds: tuple[float, float]) -> tuple[Any, Any]:
    """Vectorised stopping rule over LLR paths (..., n): (decision codes 1=H1, -1=H0, 0=continue, n_used)."""
    import numpy as np

    llr = np.asarray(llr_paths, dtype=float)
    up, down = llr >= bounds[1], llr <= bounds[0]
    stop = up | down
    any_stop = stop.any(-1)
    first = np.where(any_stop, stop.argmax(-1), llr.shape[-1] - 1)
    hit_up = np.take_along_axis(up, first[..., None], -1)[..., 0]
    return np.where(any_stop, np.where(hit_up, 1, -1), 0), first + 1


class SPRT:
    """Incremental SPRT on paired scores: `update(baseline, candidate)` after each pair, read `decision`."""

    def __init__(
        self,
        alpha: float = 0.05,
        beta: float = 0.10,
        min_effect: float = 0.15,
        *,
        score_range: tuple[float, float] = (0.0, 1.0),
    ):
        self.alpha, self.beta, self.min_effect = alpha, beta, min_effect
        self.bounds = wald_bounds(alpha, beta)
        self.score_range = score_range
        self._hi = score_range[1] - score_range[0]
        if not 0 < min_effect < self._hi:
            raise ValueError(f"min_effect must lie in (0, {self._hi}), got {min_effect}")
        self._counts: dict[float, int] = {}
        self.n = 0
        self.llr = 0.0
        self._sum = 0.0
        self.decision: Decision = "continue"

    def update(self, baseline: float, candidate: float) -> Decision:
        """Add one pair and return the decision so far. After a decision, further pairs are ignored."""
        if self.decision != "continue":
            return self.decision
        lo, hi = self.score_range
        if not (lo <= baseline <= hi and lo <= candidate <= hi):
            raise ValueError(f"scores must lie in {self.score_range}, got ({baseline}, {candidate})")
        d = float(candidate) - float(baseline)
        self._counts[d] = self._counts.get(d, 0) + 1
        self.n += 1
        self._sum += d
        values = list(self._counts)
        counts = [self._counts[v] for v in values]
        self.llr = float(llr_from_counts(values, counts, self.min_effect, -self._hi, self._hi))
        if self.llr >= self.bounds[1]:
            self.decision = "accept_h1"
        elif self.llr <= self.bounds[0]:
            self.decision = "accept_h0"
        return self.decision

    def result(self) -> SPRTResult:
        return SPRTResult(
            decision=self.decision, n_used=self.n, llr=self.llr, bounds=self.bounds,
            mean_diff=self._sum / self.n if self.n else None,
            alpha=self.alpha, beta=self.beta, min_effect=self.min_effect,
        )


def sprt_run(
    pairs: Iterable[tuple[float, float]],
    *,
    alpha: float = 0.05,
    beta: float = 0.10,
    min_effect: float = 0.15,
    score_range: tuple[float, float] = (0.0, 1.0),
) -> SPRTResult:
    """Feed (baseline, candidate) pairs in order until a decision; pairs after the stop are not read."""
    sprt = SPRT(alpha, beta, min_effect, score_range=score_range)
    for b, c in pairs:
        if sprt.update(b, c) != "continue":
            break
    return sprt.result()


def fixed_sample_size(alpha: float = 0.05, beta: float = 0.10, min_effect: float = 0.15, sd: float = 0.5) -> int:
    """Pairs a fixed-size one-sided z-test needs for the same alpha, beta and effect: ((z_a + z_b) sd / delta)^2.

    `sd` is the standard deviation of the paired difference; the SPRT's saving is measured against this.
    """
    z = NormalDist().inv_cdf
    return math.ceil(((z(1 - alpha) + z(1 - beta)) * sd / min_effect) ** 2)
