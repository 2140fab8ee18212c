"""Do the gate's decisions keep their error rate? False promotions and power, by simulation, ours beside naive.

For each regime, RUNS simulated evaluations under no effect (H0: every candidate equal to the baseline) and with
one candidate better by DELTA = 0.15 (H1), at the sample size `selfimprove power` recommends for that regime:

1. independent samples: binary scores, baseline success 0.6;
2. clustered samples: clusters of 5, intra-cluster correlation 0.5 of the paired differences (judge scores on a
   0.1 grid: a cluster effect plus a sample effect, equal variances, SD 0.5 in all);
3. 14 nightly looks: the same comparison evaluated on a fresh held-out set every night for 14 nights, promoted at
   the first night that passes;
4. 5 candidates compared on the same samples (one shared baseline), the best passing one promoted.

"ours" is the product's own decision: the sequential test (`core.stats.sequential.sequential_paths`, the function
evaluate's report and the gate's p come from) at the level evaluate gives it, then the gate's correction
(`GateSettings.adjusted_p` / `GateSettings.level`: Holm over candidates, alpha spent per look). "naive" is a
fixed-size one-sided paired t test at alpha on every sample as if independent, without any correction, at the
fixed size a textbook power calculation gives (the sequential figure for the nightly looks). Targets: false
promotion <= 5% for ours in every regime; power >= 90% for ours; the sequential test's mean samples >= 30% below
the fixed-size test's with the same alpha and the power the sequential test reached (independent regime, under
the effect and under none). Prints OK/MISSED per target.

    .venv/bin/python benchmarks/bench_stats.py [--runs 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy import stats

from selfimprove.core.gate import GateSettings
from selfimprove.core.stats.power import plan, plan_fixed
from selfimprove.core.stats.sequential import sequential_paths

ALPHA, BETA, DELTA, MIN_POWER = 0.05, 0.05, 0.15, 0.90


def naive_promotes(d: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Fixed-size one-sided paired t test per row, every sample treated as independent."""
    n = d.shape[1]
    sd = d.std(axis=1, ddof=1)
    t = np.where(sd > 0, d.mean(axis=1) / np.where(sd > 0, sd, 1) * math.sqrt(n), 0.0)
    return stats.t.sf(t, n - 1) <= alpha


def ours(observations: np.ndarray, *, candidates: int = 1, looks: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The product's test on cluster-mean paths (R, G): (p-values, stop codes, clusters used)."""
    out = sequential_paths(observations, level=ALPHA / (candidates * looks), beta=BETA, min_effect=DELTA)
    return out.p_value, out.stop, out.used


def binary_diffs(rng, runs: int, n: int, p_base: float, p_cand: float, base=None) -> tuple[np.ndarray, np.ndarray]:
    b = rng.random((runs, n)) < p_base if base is None else base
    c = rng.random((runs, n)) < p_cand
    return c.astype(float) - b, b


def clustered_diffs(rng, runs: int, clusters: int, size: int, mean: float) -> np.ndarray:
    """Per-sample differences (runs, clusters * size), ICC 0.5, SD 0.5, on a 0.1 grid, clusters contiguous."""
    sd = 0.5
    u = rng.standard_normal((runs, clusters, 1)) * sd * math.sqrt(0.5)
    e = rng.standard_normal((runs, clusters, size)) * sd * math.sqrt(0.5)
    return (np.round(np.clip(mean + u + e, -1, 1) * 10) / 10).reshape(runs, clusters * size)


def regime_independent(rng, runs: int, rows: list, checks: list) -> None:
    p = plan(DELTA, baseline=0.6, alpha=ALPHA, power=MIN_POWER, beta=BETA)
    n, fixed = p.n_sequential, p.n_fixed
    mean_used = {}
    power = 0.0
    for effect in (0.0, DELTA):
        d, _ = binary_diffs(rng, runs, n, 0.6, 0.6 + effect)
        pv, _, used = ours(d)
        settings = GateSettings(primary_eval="q", alpha=ALPHA)
        promoted = np.array([settings.adjusted_p("c", float(x)) <= settings.level for x in pv])
        dn, _ = binary_diffs(rng, runs, fixed, 0.6, 0.6 + effect)
        rows.append(("independent", effect, n, promoted.mean(), fixed, naive_promotes(dn).mean()))
        mean_used[effect] = float(used.mean())
        power = float(promoted.mean()) if effect else power
    # the fixed-size test with the same alpha and the power the sequential test reached here
    same = plan_fixed(DELTA, p.sd_diff, alpha=ALPHA, power=min(power, 0.999))
    for effect, used in mean_used.items():
        saving = 1 - used / same
        checks.append(((f"independent, {'H1' if effect else 'H0'}: sequential test's mean samples {used:.1f} vs "
                       f"{same} for the fixed-size test at the same alpha and power {power:.1%} ({saving:.0%} "
                       f"fewer; {1 - used / fixed:.0%} fewer than the {fixed} of a 90%-power fixed test)"),
                       saving >= 0.30))


def regime_clustered(rng, runs: int, rows: list, checks: list) -> None:
    size = 5
    p = plan(DELTA, sd_diff=0.5, alpha=ALPHA, power=MIN_POWER, beta=BETA, cluster_size=size, icc=0.5)
    g = p.clusters_sequential
    naive_n = plan(DELTA, sd_diff=0.5, alpha=ALPHA, power=MIN_POWER, beta=BETA).n_fixed  # ignores clustering
    for effect in (0.0, DELTA):
        d = clustered_diffs(rng, runs, g, size, effect)
        pv, _, _ = ours(d.reshape(runs, g, size).mean(axis=2))
        settings = GateSettings(primary_eval="q", alpha=ALPHA)
        promoted = np.array([settings.adjusted_p("c", float(x)) <= settings.level for x in pv])
        dn = clustered_diffs(rng, runs, math.ceil(naive_n / size), size, effect)
        rows.append(("clustered (5 per cluster, ICC 0.5)", effect, g * size, promoted.mean(), dn.shape[1],
                     naive_promotes(dn).mean()))


def regime_looks(rng, runs: int, rows: list, checks: list, looks: int = 14) -> None:
    p = plan(DELTA, baseline=0.6, alpha=ALPHA, power=MIN_POWER, beta=BETA, looks=looks)
    fixed = plan(DELTA, baseline=0.6, alpha=ALPHA, power=MIN_POWER, beta=BETA).n_fixed
    for effect in (0.0, DELTA):
        promoted = np.zeros(runs, dtype=bool)
        naive = np.zeros(runs, dtype=bool)
        for night in range(1, looks + 1):
            settings = GateSettings(primary_eval="q", alpha=ALPHA, look=night, looks=looks)
            d, _ = binary_diffs(rng, runs, p.n_sequential, 0.6, 0.6 + effect)
            pv, _, _ = ours(d, looks=looks)
            promoted |= np.array([settings.adjusted_p("c", float(x)) <= settings.level for x in pv])
            dn, _ = binary_diffs(rng, runs, fixed, 0.6, 0.6 + effect)
            naive |= naive_promotes(dn)
        rows.append((f"{looks} nightly looks", effect, p.n_sequential, promoted.mean(), fixed, naive.mean()))


def regime_candidates(rng, runs: int, rows: list, checks: list, k: int = 5) -> None:
    p = plan(DELTA, baseline=0.6, alpha=ALPHA, power=MIN_POWER, beta=BETA, candidates=k)
    fixed = plan(DELTA, baseline=0.6, alpha=ALPHA, power=MIN_POWER, beta=BETA).n_fixed
    for effect in (0.0, DELTA):
        pvals, naive_pass = [], []
        _, base = binary_diffs(rng, runs, p.n_sequential, 0.6, 0.6)
        _, base_n = binary_diffs(rng, runs, fixed, 0.6, 0.6)
        for i in range(k):  # candidate 0 carries the effect under H1
            d, _ = binary_diffs(rng, runs, p.n_sequential, 0.6, 0.6 + (effect if i == 0 else 0.0), base=base)
            pvals.append(ours(d, candidates=k)[0])
            dn, _ = binary_diffs(rng, runs, fixed, 0.6, 0.6 + (effect if i == 0 else 0.0), base=base_n)
            naive_pass.append(naive_promotes(dn))
        pv = np.stack(pvals, axis=1)
        right = np.zeros(runs, dtype=bool)
        wrong = np.zeros(runs, dtype=bool)
        for r in range(runs):
            settings = GateSettings(primary_eval="q", alpha=ALPHA, comparisons=k,
                                    family={f"c{i}": float(pv[r, i]) for i in range(k)})
            passing = [i for i in range(k) if settings.adjusted_p(f"c{i}", float(pv[r, i])) <= settings.level]
            right[r] = effect > 0 and 0 in passing
            wrong[r] = any(i != 0 or effect == 0 for i in passing)
        naive_any = np.stack(naive_pass, axis=1)
        naive_wrong = naive_any[:, 1:].any(1) if effect else naive_any.any(1)
        rows.append((f"{k} candidates", effect, p.n_sequential, (right if effect else wrong).mean(), fixed,
                     (naive_any[:, 0] if effect else naive_wrong).mean()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    rows: list = []
    checks: list = []
    for regime in (regime_independent, regime_clustered, regime_looks, regime_candidates):
        regime(rng, args.runs, rows, checks)
        print(f"  {regime.__name__} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print(f"{args.runs} runs per cell, alpha {ALPHA}, beta {BETA}, effect {DELTA}; ours = the gate's decision, "
          "naive = fixed-size t test, no clusters, no correction")
    print(f"{'regime':38} {'ours n':>7} {'ours FP':>8} {'ours power':>11} {'naive n':>8} {'naive FP':>9} "
          f"{'naive power':>12}")
    for name in dict.fromkeys(r[0] for r in rows):
        h0 = next(r for r in rows if r[0] == name and r[1] == 0)
        h1 = next(r for r in rows if r[0] == name and r[1] > 0)
        print(f"{name:38} {h0[2]:>7} {h0[3]:>8.1%} {h1[3]:>11.1%} {h0[4]:>8} {h0[5]:>9.1%} {h1[5]:>12.1%}")
        se = math.sqrt(0.05 * 0.95 / args.runs)
        checks.append((f"{name}: false promotion {h0[3]:.1%} <= 5% (naive {h0[5]:.1%}; MC SE {se:.1%})",
                       h0[3] <= 0.05))
        checks.append((f"{name}: power {h1[3]:.1%} >= 90% at the recommended n = {h1[2]}", h1[3] >= MIN_POWER))
    missed = 0
    for text, ok in checks:
        print(f"{'OK    ' if ok else 'MISSED'} {text}")
        missed += not ok
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{time.perf_counter() - t0:.0f} s, load average {load:.1f}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
