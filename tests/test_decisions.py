"""One meaning of a score, clustered inference, the sequential decision test, its corrections and power."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from selfimprove.core.records import EvalSpec
from selfimprove.core.scores import normalize, normalize_or_worst, reward
from selfimprove.core.stats.clustered import ClusteredMean, cluster_bootstrap, cluster_means, icc_anova
from selfimprove.core.stats.multiple import holm_adjusted, look_level
from selfimprove.core.stats.power import plan, plan_fixed
from selfimprove.core.stats.sequential import SequentialMonitor, sequential_paths, sequential_test
from selfimprove.core.stats.stopping import bias_adjusted_mean, stopping_bias

RAILS = EvalSpec(name="q", choices={"bad": 0.0, "ok": 5.0, "good": 10.0})
HARM = EvalSpec(name="harm", direction="minimize")


# ---- one meaning of a score --------------------------------------------------------------------------------

def test_normalisation_scale_clamp_direction_missing():
    assert normalize(5.0, RAILS) == 0.5 and normalize(10.0, RAILS) == 1.0
    assert normalize(12.0, RAILS) == 1.0 and normalize(-3.0, RAILS) == 0.0  # clamped
    assert normalize(0.2, HARM) == pytest.approx(0.8) and normalize(1.7, HARM) == 0.0  # flipped after clamping
    assert normalize(None, RAILS) is None and normalize(float("nan"), HARM) is None  # missing stays missing
    assert normalize_or_worst(None, HARM) == 0.0  # where a number is needed, missing is the worst
    assert reward({"q": 10.0}, [RAILS, HARM]) == 0.5 and reward({"q": 10.0, "harm": 0.0}, [RAILS, HARM]) == 1.0


def test_evaluate_update_and_gate_share_the_normalisation():
    from selfimprove.optimizers.base import ScoredSample, Verdict

    row = ScoredSample("s", (), "o", {"q": Verdict(12.0), "harm": Verdict(0.25)})
    assert row.value([RAILS, HARM]) == pytest.approx((normalize(12.0, RAILS) + normalize(0.25, HARM)) / 2)
    from selfimprove.evaluation.report import eval_entry

    e = eval_entry(HARM, [0.5, None, 0.9], [0.1, 0.2, 0.7], ["a", "b", "c"], test=None, n_resamples=200, seed=0)
    assert e["scale"] == "normalized" and e["n"] == 2 and e["n_dropped"] == 1  # the pair with a missing side
    assert e["diff"] == pytest.approx(((0.9 - 0.5) + (0.3 - 0.1)) / 2)  # a drop of harm is a gain


# ---- clusters ----------------------------------------------------------------------------------------------

def test_cluster_statistics_reduce_to_the_ordinary_ones_for_singletons():
    rng = np.random.default_rng(3)
    d = rng.choice([-1.0, 0.0, 1.0], size=80, p=[0.2, 0.5, 0.3])
    cm = ClusteredMean(d, list(range(80)))
    assert cm.mean == pytest.approx(d.mean())
    assert cm.se == pytest.approx(d.std(ddof=1) / math.sqrt(80))  # CR1 with singletons = the usual SE
    assert list(cluster_means([1.0, 0.0, -1.0, 1.0], ["x", "y", "x", "z"])) == [0.0, 0.0, 1.0]


def test_cluster_robust_interval_is_wider_when_clusters_share_their_outcome():
    # 20 clusters of 5 identical differences: 20 independent observations, not 100
    rng = np.random.default_rng(0)
    per_cluster = rng.choice([-1.0, 1.0], size=20)
    d = np.repeat(per_cluster, 5)
    ks = np.repeat(np.arange(20), 5).tolist()
    clustered = cluster_bootstrap(d, ks, seed=1)
    naive = cluster_bootstrap(d, list(range(100)), seed=1)
    assert (clustered.high - clustered.low) > 1.8 * (naive.high - naive.low)
    assert ClusteredMean(d, ks).se > 2 * ClusteredMean(d, list(range(100))).se
    assert icc_anova(d, ks) == pytest.approx(1.0) and icc_anova(rng.random(100), list(range(100))) == 0.0


# ---- the sequential test -----------------------------------------------------------------------------------

def test_one_p_value_decides():
    """p <= level exactly when the test stopped for efficacy: the gate and the report show the same number."""
    rng = np.random.default_rng(5)
    obs = rng.choice([-1.0, 0.0, 1.0], size=(400, 400), p=[0.2, 0.45, 0.35])
    out = sequential_paths(obs, level=0.05, beta=0.05, min_effect=0.15)
    assert ((out.p_value <= 0.05) == np.isin(out.stop, (1, 2))).all()
    assert (out.stop == 1).mean() > 0.8 and (out.used[np.isin(out.stop, (1, -1))] < 400).all()


def test_sequential_test_reports_when_and_why_it_stopped():
    d = [1.0] * 30
    r = sequential_test(d, list(range(30)), level=0.05, beta=0.05, min_effect=0.15)
    assert r.stop == "efficacy" and r.decision == "accept_h1" and r.p_value <= 0.05
    assert r.reason().startswith(f"decided at n = {r.n_used} of 30 samples ({r.clusters_used} of 30 clusters)")
    flat = sequential_test([0.0] * 200, list(range(200)), level=0.05, beta=0.05, min_effect=0.15)
    assert flat.stop == "futility" and flat.p_value == 1.0 and "futility" in flat.reason()
    short = sequential_test([1.0, 0.0, -1.0], [0, 1, 2], level=0.05, beta=0.05, min_effect=0.15, n_available=50)
    assert short.stop == "exhausted" and short.n_available == 50 and "undecided" in short.reason()


def test_a_small_set_with_a_large_effect_is_decided_at_the_final_analysis():
    # 17 samples, 10 wins, 1 loss: too little evidence for the sequential bound, clear for the final t test
    d = [1.0] * 10 + [0.0] * 6 + [-1.0]
    r = sequential_test(d, list(range(17)), level=0.05, beta=0.05, min_effect=0.15)
    assert r.stop == "final" and r.decision == "accept_h1" and r.p_value <= 0.05
    assert r.reason().startswith("decided at the final analysis, after all n = 17 of 17 samples")
    # not when the planned samples were not all evaluated (a budget stop): its size was not fixed in advance
    cut = sequential_test(d, list(range(17)), level=0.05, beta=0.05, min_effect=0.15, clusters_available=30)
    assert cut.stop == "exhausted" and cut.p_value > 0.05


def test_monitor_and_report_reach_the_same_stop():
    rng = np.random.default_rng(9)
    d = rng.choice([-1.0, 0.0, 1.0], size=90, p=[0.1, 0.5, 0.4])
    ks = np.repeat(np.arange(30), 3).tolist()
    mon = SequentialMonitor(0.05, 0.05, 0.15)
    for start in range(0, 90, 16):  # batches that cut clusters
        for i in range(start, min(start + 16, 90)):
            mon.add(d[i], ks[i])
        nxt = start + 16
        mon.check(ks[nxt - 1] if nxt < 90 and ks[nxt] == ks[nxt - 1] else None)
        if mon.decision != "continue":
            break
    assert mon.decision == sequential_test(d, ks, level=0.05, beta=0.05, min_effect=0.15).decision == "accept_h1"


def test_corrected_effect_removes_most_of_the_early_stopping_bias():
    """Known case: true mean 0.15, SD 0.6; runs that stopped early overstate it, the corrected estimate less so."""
    rng = np.random.default_rng(11)
    mu, sd, g = 0.15, 0.6, 200
    assert stopping_bias(mu, sd, g, level=0.05, beta=0.05, min_effect=0.15) > 0.02
    naive, corrected = [], []
    for _ in range(60):
        x = np.clip(mu + sd * rng.standard_normal(g), -1, 1)
        r = sequential_test(x, list(range(g)), level=0.05, beta=0.05, min_effect=0.15)
        if r.stop == "efficacy":
            naive.append(r.estimate)
            corrected.append(r.estimate_corrected)
    true_mean = float(np.clip(mu + sd * rng.standard_normal(200_000), -1, 1).mean())
    assert len(naive) > 30
    assert abs(np.mean(corrected) - true_mean) < 0.5 * abs(np.mean(naive) - true_mean)
    assert bias_adjusted_mean(0.3, 0.0, 10, 100, level=0.05, beta=0.05, min_effect=0.15) == 0.3  # no spread


# ---- corrections -------------------------------------------------------------------------------------------

def test_holm_and_look_spending():
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjusted([0.5]) == [0.5] and holm_adjusted([]) == []
    assert look_level(0.05, 1, 1) == 0.05 and look_level(0.05, 3, 4) == 0.0125 and look_level(0.05, 5, 4) == 0.0


# ---- power -------------------------------------------------------------------------------------------------

def test_power_plan_known_case_and_design_effect():
    p = plan(0.15, baseline=0.6)
    assert p.n_fixed == plan_fixed(0.15, math.sqrt(0.24 + 0.1875)) == 163  # (1.645 + 1.282)^2 * 0.4275 / 0.0225
    assert p.n_fixed < p.n_sequential < 2 * p.n_fixed and p.expected_h1 < 0.75 * p.n_fixed
    c = plan(0.15, baseline=0.6, cluster_size=5, icc=0.5)
    assert c.design_effect == 3.0 and c.n_fixed == pytest.approx(3 * 163, abs=2) and c.n_sequential % 5 == 0
    noisy = plan(0.15, baseline=0.6, judge_flip=0.1)
    voted = plan(0.15, baseline=0.6, judge_flip=0.1, judge_votes=5)
    assert noisy.n_fixed > voted.n_fixed > p.n_fixed and noisy.visible_effect == pytest.approx(0.12)
    with pytest.raises(ValueError, match="beta"):
        plan(0.15, baseline=0.6, beta=0.2)


def test_power_cli_json():
    from selfimprove.cli.app import app

    res = CliRunner().invoke(app, ["power", "--baseline", "0.6", "--effect", "0.15", "--cluster-size", "5",
                                   "--icc", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.power/1" and doc["design_effect"] == 3.0 and doc["n_sequential"] > 0
    bad = CliRunner().invoke(app, ["power", "--effect", "0.15", "--json"])
    assert bad.exit_code == 2 and "exactly one of --baseline" in json.loads(bad.stdout)["error"]


# ---- looks over time and the evaluation's design -----------------------------------------------------------

def test_prior_looks_count_earlier_reports_of_the_same_comparison(tmp_path):
    from selfimprove.evaluation.design import prior_looks, test_level
    from selfimprove.store.runs import Workspace

    ws = Workspace(tmp_path)

    def report(baseline, candidates, data):
        run = ws.new_run("t")
        (run.path / "report.json").write_text(json.dumps(
            {"baseline": {"policy_digest": baseline}, "inputs": {"dataset": data},
             "candidates": [{"policy_digest": c} for c in candidates]}))
        return run

    report("sha256:b", ["sha256:c1"], "sha256:night1")
    report("sha256:b", ["sha256:c1", "sha256:c2"], "sha256:night2")
    report("sha256:b", ["sha256:c1"], "sha256:night2")  # a fork of night 2: the same samples, the same look
    report("sha256:other", ["sha256:c1"], "sha256:night1")  # another baseline: another comparison
    now = ws.new_run("t")
    assert prior_looks(ws, "t", now, "sha256:b", ["sha256:c1"], "sha256:night3") == 3  # the third look at (b, c1)
    assert prior_looks(ws, "t", now, "sha256:b", ["sha256:c2"], "sha256:night3") == 2
    assert prior_looks(ws, "t", now, "sha256:b", ["sha256:c1"], "sha256:night2") == 2  # re-running night 2
    assert prior_looks(ws, "t", now, "sha256:b", ["sha256:new"], "sha256:night3") == 1
    assert test_level(0.05, 2, 5) == pytest.approx(0.005)


def test_power_check_warns_when_the_held_out_set_is_too_small():
    from selfimprove.config.models import Evaluate
    from selfimprove.core.records import EvalResult, Message, Sample
    from selfimprove.evaluation.design import power_check

    spec = EvalSpec(name="q", choices={"no": 0.0, "yes": 1.0})

    def sample(i, trace):
        return Sample(sample_id=f"s{i}", span_id=f"p{i}", trace_id=trace, history=(Message(role="user", content="x"),),
                      evals={"q": EvalResult(score=float(i % 2))})

    small = [sample(i, f"t{i // 2}") for i in range(20)]
    info, note = power_check(small, {s.sample_id: s.trace_id for s in small}, spec, Evaluate(), 1, 1)
    assert info["samples"] == 20 and info["clusters"] == 10 and info["cluster_size"] == 2 and info["power"] < 0.8
    assert note and "give only" in note and "selfimprove power --baseline 0.50 --effect 0.15" in note
    big = [sample(i, f"t{i}") for i in range(600)]
    info, note = power_check(big, {s.sample_id: s.trace_id for s in big}, spec, Evaluate(), 1, 1)
    assert note is None and info["power"] >= 0.8
