"""The statistics, checked against closed forms and validated by simulation (vectorised, seeded, fast)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import optimize

from selfimprove.core.canonical import canonical_json
from selfimprove.core.stats import (
    SPRT,
    classify_samples,
    fixed_sample_size,
    pareto_front,
    sprt_run,
    wald_bounds,
)
from selfimprove.core.stats.clustered import cluster_bootstrap
from selfimprove.core.stats.sprt import constrained_log_likelihood, first_crossing, llr_from_counts

DELTA = 0.15
BOUNDS = wald_bounds(0.05, 0.10)
BINARY = np.array([-1.0, 0.0, 1.0])  # loss, tie, win
RAILS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # differences of judge scores in {0, 0.5, 1}


@functools.cache
def simulate_sprt(case, *, runs=2000, max_n=600, seed=0, chunk=40):
    """Run `runs` SPRTs on i.i.d. differences drawn from the case's distribution.

    Returns (rate of accept_h1, rate of undecided at max_n, mean pairs used). Paths advance `chunk` pairs at
    a time and stopped paths drop out; the LLR of a path depends only on its value counts, so it is computed
    once per distinct count vector, with the module's own solver and stopping rule.
    """
    values, probs = CASES[case]
    rng = np.random.default_rng(seed)
    k = len(values)
    draws = rng.choice(k, size=(runs, max_n), p=probs)
    cum = np.cumsum(np.eye(k, dtype=np.int64)[draws], axis=1)  # (runs, max_n, k)
    base = (max_n + 1) ** np.arange(k, dtype=np.int64)
    decision = np.zeros(runs, dtype=int)
    n_used = np.full(runs, max_n)
    active = np.arange(runs)
    for start in range(0, max_n, chunk):
        block = cum[active, start : start + chunk]
        keys, inverse = np.unique((block * base).sum(-1).ravel(), return_inverse=True)
        unique_counts = (keys[:, None] // base) % (max_n + 1)
        llr = llr_from_counts(values, unique_counts, DELTA)[inverse].reshape(block.shape[:2])
        dec, n = first_crossing(llr, BOUNDS)
        stopped = dec != 0
        decision[active[stopped]] = dec[stopped]
        n_used[active[stopped]] = start + n[stopped]
        active = active[~stopped]
        if active.size == 0:
            break
    return float((decision == 1).mean()), float((decision == 0).mean()), float(n_used.mean())


def trinomial(p_baseline, p_candidate):
    """(loss, tie, win) probabilities for independent Bernoulli scores."""
    win = p_candidate * (1 - p_baseline)
    loss = p_baseline * (1 - p_candidate)
    return np.array([loss, 1 - win - loss, win])


def rails_diff(pb, pc):
    """Distribution of c - b for independent scores on {0, 0.5, 1} with probabilities pb, pc."""
    levels = np.array([0.0, 0.5, 1.0])
    out = dict.fromkeys(RAILS.tolist(), 0.0)
    for i, b in enumerate(levels):
        for j, c in enumerate(levels):
            out[c - b] += pb[i] * pc[j]
    return np.array([out[v] for v in RAILS.tolist()])


# ---- SPRT: simulation ------------------------------------------------------------------------------------

NULL_CASES = {
    "binary, independent, p=0.6": (BINARY, trinomial(0.6, 0.6)),
    "binary, correlated, 10% discordant": (BINARY, np.array([0.05, 0.90, 0.05])),
    "binary, 90% discordant": (BINARY, np.array([0.45, 0.10, 0.45])),
    "rails {0,.5,1}": (RAILS, rails_diff([0.3, 0.3, 0.4], [0.3, 0.3, 0.4])),
}
EFFECT_CASES = {
    "binary, independent, 0.50 -> 0.65": (BINARY, trinomial(0.5, 0.65)),
    "binary, correlated, 25% discordant": (BINARY, np.array([0.05, 0.75, 0.20])),
    "binary, 75% discordant": (BINARY, np.array([0.30, 0.25, 0.45])),
    "rails {0,.5,1}, +0.15": (RAILS, rails_diff([0.4, 0.3, 0.3], [0.25, 0.3, 0.45])),
}
CASES = {**NULL_CASES, **EFFECT_CASES}


@pytest.mark.parametrize("name", list(NULL_CASES))
def test_sprt_false_positive_rate_under_no_effect(name):
    values, probs = NULL_CASES[name]
    assert abs(float(values @ probs)) < 1e-12
    accept_h1, undecided, _ = simulate_sprt(name, seed=1)
    assert accept_h1 <= 0.05 + 0.02, f"{name}: false-positive rate {accept_h1:.3f}"
    assert undecided <= 0.03


@pytest.mark.parametrize("name", list(EFFECT_CASES))
def test_sprt_power_at_the_minimum_effect(name):
    values, probs = EFFECT_CASES[name]
    assert abs(float(values @ probs) - DELTA) < 1e-12
    accept_h1, undecided, _ = simulate_sprt(name, seed=2)
    assert accept_h1 >= 0.88, f"{name}: power {accept_h1:.3f}"
    assert undecided <= 0.03


@pytest.mark.parametrize("name", list(EFFECT_CASES))
def test_sprt_uses_far_fewer_pairs_than_a_fixed_size_test(name):
    values, probs = EFFECT_CASES[name]
    sd = math.sqrt(float((values - DELTA) ** 2 @ probs))
    fixed_n = fixed_sample_size(0.05, 0.10, DELTA, sd)
    _, _, mean_n = simulate_sprt(name, seed=2)  # the same runs as the power test (cached)
    assert mean_n <= 0.70 * fixed_n, f"{name}: SPRT {mean_n:.1f} pairs vs fixed {fixed_n}"


def test_fixed_sample_size_is_the_normal_approximation():
    # ((1.6449 + 1.2816) * 0.5 / 0.15)^2 = 95.15 -> 96
    assert fixed_sample_size(0.05, 0.10, 0.15, 0.5) == 96


# ---- SPRT: the statistic and the incremental API -----------------------------------------------------------


def brute_force_constrained(values, counts, mu):
    """The same maximum by a generic optimiser over the probabilities of values plus the endpoints -1, 1."""
    support = np.concatenate([values, [-1.0, 1.0]])
    weights = np.concatenate([counts, [0.0, 0.0]]).astype(float)
    n = weights.sum()

    def neg_loglik(p):
        return -float(weights @ np.log(np.maximum(p, 1e-300)))

    res = optimize.minimize(
        neg_loglik, np.full(support.size, 1 / support.size), method="SLSQP", bounds=[(1e-12, 1)] * support.size,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}, {"type": "eq", "fun": lambda p: p @ support - mu}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    unconstrained = float(weights[weights > 0] @ np.log(weights[weights > 0] / n))
    return -res.fun - unconstrained


@pytest.mark.parametrize("seed", range(6))
def test_constrained_likelihood_matches_a_generic_optimiser(seed):
    rng = np.random.default_rng(seed)
    values = np.unique(np.round(rng.uniform(-1, 1, size=4), 2))
    counts = rng.integers(0, 6, size=values.size)
    counts[0] += 1
    for mu in (0.0, DELTA):
        ours = float(constrained_log_likelihood(values, counts, mu))
        assert ours <= 1e-12
        assert ours == pytest.approx(brute_force_constrained(values, counts, mu), abs=1e-5)


def test_ties_alone_are_weak_evidence_against_h1():
    # n ties: the best H1 distribution puts exactly delta on wins, so log L ratio = n log(1 - delta).
    assert float(llr_from_counts(BINARY, [0, 10, 0], DELTA)) == pytest.approx(10 * math.log(1 - DELTA))
    sprt = SPRT()
    decisions = [sprt.update(1.0, 1.0) for _ in range(5)]
    assert decisions == ["continue"] * 5  # five ties must not settle anything


def test_incremental_sprt_matches_the_vectorised_llr():
    rng = np.random.default_rng(7)
    b = rng.choice([0.0, 0.5, 1.0], size=40)
    c = rng.choice([0.0, 0.5, 1.0], size=40, p=[0.2, 0.3, 0.5])
    sprt = SPRT(0.001, 0.001, DELTA)  # tight bounds so that it does not stop within 40 pairs
    d = c - b
    for i in range(40):
        sprt.update(b[i], c[i])
        counts = [(d[: i + 1] == v).sum() for v in RAILS]
        assert sprt.llr == pytest.approx(float(llr_from_counts(RAILS, counts, DELTA)), abs=1e-9)
    assert sprt.decision == "continue"


def test_sprt_run_stops_early_and_reads_no_further():
    pairs = iter([(0.0, 1.0)] * 1000)
    result = sprt_run(pairs)
    assert result.decision == "accept_h1"
    # all wins: the best mean-delta fit puts (1 + delta) / 2 on wins, so each adds log(1 + delta) to the LLR
    assert result.n_used == math.ceil(BOUNDS[1] / math.log(1 + DELTA)) == 21
    assert len(list(pairs)) == 1000 - result.n_used  # the iterator was not drained
    assert result.llr >= result.bounds[1]
    assert canonical_json(result.model_dump())  # serialisable for report.json


def test_sprt_accepts_h0_for_a_worse_candidate_and_decisions_are_final():
    sprt = SPRT()
    n = 0
    while sprt.update(1.0, 0.0) == "continue":
        n += 1
    assert sprt.decision == "accept_h0" and sprt.n == n + 1
    assert sprt.update(0.0, 1.0) == "accept_h0" and sprt.n == n + 1  # ignored after the stop


def test_sprt_inconclusive_when_data_run_out():
    result = sprt_run([(0.0, 1.0), (1.0, 0.0)] * 5)
    assert result.decision == "continue" and result.n_used == 10 and result.mean_diff == 0.0


def test_sprt_rejects_scores_out_of_range():
    with pytest.raises(ValueError):
        SPRT().update(0.0, 1.5)
    with pytest.raises(ValueError):
        SPRT(min_effect=0.0)
    assert SPRT(score_range=(0.0, 10.0), min_effect=1.5).update(0.0, 10.0) == "continue"


# ---- the cluster bootstrap --------------------------------------------------------------------------------


def test_bootstrap_ci_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(11)
    runs, n, hits = 400, 60, 0
    # scores on rails with known probabilities, so that the true difference is known exactly
    levels = np.array([0.0, 0.5, 1.0])
    pb, pc = np.array([0.4, 0.3, 0.3]), np.array([0.25, 0.3, 0.45])
    true_diff = float(levels @ pc - levels @ pb)
    for i in range(runs):
        b = rng.choice(levels, n, p=pb)
        c = rng.choice(levels, n, p=pc)
        ci = cluster_bootstrap(c - b, list(range(n)), seed=i)
        hits += ci.low <= true_diff <= ci.high
    assert 0.92 <= hits / runs <= 0.98, f"coverage {hits / runs:.3f}"


def test_clustered_bootstrap_covers_under_intra_cluster_correlation():
    """20 clusters of 5, ICC 0.5: the cluster bootstrap keeps its coverage, resampling samples does not."""
    rng = np.random.default_rng(12)
    runs, g, m, hits, naive_hits = 300, 20, 5, 0, 0
    ks = np.repeat(np.arange(g), m).tolist()
    for i in range(runs):
        d = (rng.standard_normal(g)[:, None] + rng.standard_normal((g, m))).ravel() * 0.3
        hits += (ci := cluster_bootstrap(d, ks, seed=i)).low <= 0 <= ci.high
        naive_hits += (ci := cluster_bootstrap(d, list(range(g * m)), seed=i)).low <= 0 <= ci.high
    assert hits / runs >= 0.9 and naive_hits / runs < 0.85, (hits / runs, naive_hits / runs)


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    rng = np.random.default_rng(3)
    d = rng.random(50) - rng.random(50)
    one, two = cluster_bootstrap(d, list(range(50)), seed=5), cluster_bootstrap(d, list(range(50)), seed=5)
    assert one == two
    assert one.low <= one.mean_diff <= one.high
    assert one.mean_diff == pytest.approx(float(d.mean()))
    assert cluster_bootstrap(d, list(range(50)), seed=6) != one
    flat = cluster_bootstrap([0.5, 0.5], [0, 1])
    assert (flat.low, flat.mean_diff, flat.high) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        cluster_bootstrap([], [])
    with pytest.raises(ValueError):
        cluster_bootstrap([1.0, 0.0], [1])


# ---- Pareto front and sample classes --------------------------------------------------------------------

DIRS = {"correctness": "maximize", "cost": "minimize"}


def test_pareto_front_keeps_non_dominated_points_in_order():
    pts = [
        ("baseline", {"correctness": 0.70, "cost": 1.0}, DIRS),
        ("cheap", {"correctness": 0.70, "cost": 0.5}, DIRS),  # dominates baseline
        ("best", {"correctness": 0.90, "cost": 2.0}, DIRS),
        ("worse", {"correctness": 0.60, "cost": 2.0}, DIRS),
        ("twin", {"correctness": 0.90, "cost": 2.0}, DIRS),  # equal to best: both stay
    ]
    assert pareto_front(pts) == ["cheap", "best", "twin"]
    assert pareto_front([]) == []
    with pytest.raises(ValueError):
        pareto_front([pts[0], ("x", {"correctness": 1.0}, {"correctness": "maximize"})])
    with pytest.raises(ValueError):
        pareto_front([("a", {"q": 1.0}, {"q": "up"})])


def test_classify_samples():
    matrix = {
        "s1": {"p0": 1.0, "p1": 1.0, "p2": 0.5},
        "s2": {"p0": 0.0, "p1": 0.0, "p2": None},
        "s3": {"p0": 0.0, "p1": 1.0},
        "s4": {"p0": None},
        "s5": {"p0": 0.0},
    }
    assert classify_samples(matrix) == {
        "s1": "trivial", "s2": "challenging", "s3": "discriminative", "s5": "challenging",
    }
    assert classify_samples(matrix, success_at=1.0)["s1"] == "discriminative"
