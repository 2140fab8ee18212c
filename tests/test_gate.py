"""The promotion gate (selfimprove/core/gate.py): every rule, every failure path, all reasons at once."""

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfimprove.config.models import Gate
from selfimprove.core.gate import GateSettings, decide, directed, primary_evidence, settings_from_config


def ev(diff, ci, *, n=60, direction="maximize", p=None, p_regression=None, corrected=None, base=0.5,
       scale="normalized"):
    """An eval entry as evaluate writes it: normalised scores, the decision test's p (primary) and the
    cluster-robust p of a drop (guardrails). By default p is small exactly when the CI excludes 0 upward and
    p_regression small exactly when it excludes 0 downward."""
    ci_t = tuple(ci) if ci is not None else (diff, diff)
    p = (0.001 if ci_t[0] > 0 else 0.4) if p is None else p
    p_regression = (0.001 if ci_t[1] < 0 else 0.4) if p_regression is None else p_regression
    out = {"direction": direction, "baseline_mean": base, "candidate_mean": base + diff, "diff": diff,
           "ci": list(ci) if ci is not None else None, "n": n, "clusters": n, "n_dropped": 0,
           "p_regression": p_regression,
           "test": {"p_value": p, "estimate": diff, "estimate_corrected": diff if corrected is None else corrected,
                    "stop": "efficacy" if p < 0.05 else "exhausted", "reason": "decided at n = 30 of 60"}}
    if scale:
        out["scale"] = scale
    return out


def entry(**evals):
    return {"id": "c-abc", "policy_digest": "sha256:" + "0" * 64, "passed_guards": True, "pareto": True,
            "evals": evals or {"policy": ev(0.20, (0.10, 0.30)), "tone": ev(0.0, (-0.05, 0.05))},
            "cost": {"per_call_usd": 0.0004, "baseline_per_call_usd": 0.0003, "tokens_per_call": 300,
                     "latency_ms_p50": 12.0},
            "errors": {"generation": 0, "judgement": 0}}


S = GateSettings(primary_eval="policy")


def test_a_clear_improvement_passes():
    d = decide(entry(), S)
    assert d.passed and d.reasons == () and d.candidate == "c-abc"
    assert [c.verdict for c in d.checks] == ["improved", "ok"]


def test_guard_failure_refuses():
    e = entry()
    e["passed_guards"] = False
    d = decide(e, S)
    assert not d.passed and d.reasons == ("candidate c-abc did not pass its guard checks",)


def test_gain_below_minimum_refuses_even_when_significant():
    d = decide(entry(policy=ev(0.015, (0.005, 0.025))), S)
    assert not d.passed
    assert "less than the required +0.020" in d.reasons[0]
    assert d.checks[0].verdict == "too small"


def test_not_significant_refuses():
    d = decide(entry(policy=ev(0.10, (-0.02, 0.22))), S)
    assert not d.passed and "not significant" in d.reasons[0]


def test_best_of_many_is_holm_corrected():
    # p = 0.012: significant alone, not as one of 5 candidates compared on the same samples (Holm: 5 p > 0.05)
    e = entry(policy=ev(0.13, (0.03, 0.23), p=0.012))
    assert decide(e, S).passed
    five = S.model_copy(update={"family": {"c-abc": 0.012, "c2": 0.5, "c3": 0.6, "c4": 0.7, "c5": 0.8},
                                "comparisons": 5})
    d = decide(e, five)
    assert not d.passed and d.checks[0].verdict == "not significant"
    assert d.checks[0].p_adjusted == pytest.approx(0.06) and d.checks[0].level == 0.05
    assert "Holm-adjusted over 5 candidate(s) 0.06 > level 0.05" in d.reasons[0]
    assert decide(entry(policy=ev(0.13, (0.03, 0.23), p=0.009)), five).passed
    # candidates counted but not listed count as p = 1 (Bonferroni for the best)
    assert not decide(e, S.model_copy(update={"comparisons": 5})).passed


def test_looks_spend_alpha():
    e = entry(policy=ev(0.13, (0.03, 0.23), p=0.03))
    assert decide(e, S).passed
    two = S.model_copy(update={"looks": 2})
    assert not decide(e, two).passed  # 0.03 > 0.05 / 2
    assert decide(entry(policy=ev(0.13, (0.03, 0.23), p=0.02)), two.model_copy(update={"look": 2})).passed
    past = decide(entry(policy=ev(0.13, (0.03, 0.23), p=1e-9)), two.model_copy(update={"look": 3}))
    assert not past.passed and "no alpha left" in past.reasons[0]


def test_missing_decision_test_refuses():
    e = entry()
    del e["evals"]["policy"]["test"]
    d = decide(e, S)
    assert not d.passed and "no decision test" in d.reasons[0]


def test_the_threshold_applies_to_the_corrected_effect():
    assert decide(entry(policy=ev(0.20, (0.10, 0.30), corrected=0.15)), S).checks[0].gain == 0.15
    d = decide(entry(policy=ev(0.20, (0.10, 0.30), corrected=0.01)), S)
    assert not d.passed and "improved by +0.010, less than the required +0.020" in d.reasons[0]


def test_missing_primary_and_empty_primary_refuse():
    d = decide(entry(tone=ev(0.1, (0.05, 0.15))), S)
    assert not d.passed and "primary eval 'policy' is missing" in d.reasons[0]
    d = decide(entry(policy=ev(0.2, (0.1, 0.3), n=0)), S)
    assert not d.passed and "no scored samples" in d.reasons[0]


def test_significant_regression_beyond_tolerance_refuses():
    d = decide(entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.10, (-0.18, -0.02))), S)
    assert not d.passed
    assert d.reasons == (("eval 'tone' regressed by -0.100, beyond its tolerance 0.020 (95% CI [-0.180, -0.020], "
                          "n=60, Holm-adjusted p of a drop 0.001)"),)
    assert d.checks[1].verdict == "regressed"


def test_a_noisy_drop_is_a_warning_not_a_refusal():
    d = decide(entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.05, (-0.12, 0.02))), S)
    assert d.passed and d.checks[1].verdict == "possible regression"
    assert "not significantly" in d.warnings[0]


def test_regression_checks_are_holm_corrected():
    # two guardrails, each p = 0.03 for a drop: alone significant, as a family of two (Holm: 0.06 for both) not
    one = entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.10, (-0.18, -0.02), p_regression=0.03))
    assert not decide(one, S).passed
    two = entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.10, (-0.18, -0.02), p_regression=0.03),
                style=ev(-0.10, (-0.18, -0.02), p_regression=0.03))
    d = decide(two, S)
    assert d.passed and [c.verdict for c in d.checks[1:]] == ["possible regression"] * 2


def test_a_significant_drop_within_tolerance_is_allowed():
    d = decide(entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.01, (-0.015, -0.005))), S)
    assert d.passed and d.checks[1].verdict == "ok"


def test_per_eval_tolerance_overrides_the_default():
    e = entry(policy=ev(0.2, (0.1, 0.3)), tone=ev(-0.10, (-0.18, -0.02)))
    assert decide(e, S.model_copy(update={"max_regression": {"tone": 0.15}})).passed
    assert not decide(e, S.model_copy(update={"default_max_regression": 0.15, "max_regression": {"tone": 0.05}})).passed


def test_normalised_entries_are_gains_whatever_the_direction():
    e = entry(policy=ev(0.2, (0.1, 0.3), direction="minimize"))
    assert decide(e, S).checks[0].gain == pytest.approx(0.2)


def test_minimize_direction_mirrors_gain_and_ci_of_older_reports():
    # an older report (no "scale"): raw units; lower is better; a diff of -0.2 is a gain of +0.2
    e = entry(policy=ev(-0.2, (-0.3, -0.1), direction="minimize", scale=None, p=0.001, corrected=0.2))
    d = decide(e, S)
    assert d.passed and d.checks[0].gain == pytest.approx(0.2) and d.checks[0].ci == pytest.approx((0.1, 0.3))
    # a rise of a minimised guardrail is a regression
    e = entry(policy=ev(0.2, (0.1, 0.3)), harm=ev(0.1, (0.05, 0.15), direction="minimize", scale=None,
                                                   p_regression=0.001))
    d = decide(e, S)
    assert not d.passed and "eval 'harm' regressed by -0.100" in d.reasons[0]


def test_cost_ceiling():
    settings = S.model_copy(update={"max_cost_per_call_usd": 0.0003})
    d = decide(entry(), settings)
    assert not d.passed and "cost per call $0.000400 is above the ceiling $0.000300" in d.reasons[0]
    assert decide(entry(), S.model_copy(update={"max_cost_per_call_usd": 0.001})).passed
    e = entry()
    e["cost"] = {"per_call_usd": None}
    d = decide(e, settings)
    assert not d.passed and "cost per call is unknown" in d.reasons[0]


def test_every_reason_is_returned_not_just_the_first():
    e = entry(policy=ev(0.01, (-0.05, 0.07), p=0.6), tone=ev(-0.2, (-0.3, -0.1)),
              format=ev(-0.3, (-0.4, -0.2)))
    e["passed_guards"] = False
    d = decide(e, S.model_copy(update={"max_cost_per_call_usd": 0.0001}))
    assert not d.passed
    text = "\n".join(d.reasons)
    for part in ("guard checks", "less than the required", "not significant", "p = 0.6",
                 "'format' regressed", "'tone' regressed", "above the ceiling"):
        assert part in text
    assert len(d.reasons) == 6


def test_failed_calls_are_warned():
    e = entry()
    e["errors"] = {"generation": 2, "judgement": 1}
    d = decide(e, S)
    assert d.passed and "3 call(s) failed" in d.warnings[0]


def test_settings_from_config_and_flag_override():
    gate = Gate(min_improvement=0.05, max_regression={"tone": 0.1}, max_cost_per_call_usd=0.01)
    s = settings_from_config(gate, "policy")
    assert (s.min_improvement, s.tolerance("tone"), s.tolerance("other")) == (0.05, 0.1, 0.02)
    assert settings_from_config(gate, "policy", min_improvement=0.3).min_improvement == 0.3
    assert not decide(entry(), settings_from_config(gate, "policy", min_improvement=0.3)).passed


def test_primary_evidence_carries_raw_report_values():
    p = primary_evidence(entry(), "policy")
    assert (p["eval"], p["diff"], p["ci"], p["n"]) == ("policy", 0.2, [0.1, 0.3], 60)


def test_decide_does_not_mutate_its_input():
    e = entry()
    before = copy.deepcopy(e)
    decide(e, S)
    assert e == before


@given(diff=st.floats(-1, 1), half=st.floats(0, 1), tol=st.floats(0, 0.5), minimum=st.floats(0, 0.5))
def test_property_pass_implies_every_rule(diff, half, tol, minimum):
    ci = (diff - half, diff + half)
    e = entry(policy=ev(diff, ci), tone=ev(-diff, (-diff - half, -diff + half)))
    s = GateSettings(primary_eval="policy", min_improvement=minimum, default_max_regression=tol)
    d = decide(e, s)
    gain_ok = diff >= minimum and e["evals"]["policy"]["test"]["p_value"] <= s.alpha
    tone_regressed = -diff < -tol and (-diff + half) < 0
    assert d.passed == (gain_ok and not tone_regressed)
    assert d.passed == (len(d.reasons) == 0)


def test_directed_ignores_non_finite_values():
    assert directed({"diff": float("nan"), "ci": [0, float("inf")]}) == (None, None)


def test_too_many_pairs_lost_to_failed_calls_refuses():
    e = entry()
    e["n_samples"] = 64  # the primary has n=60 pairs: 4 lost (6%), above the default 5%
    d = decide(e, S)
    assert not d.passed and d.reasons == ("4 of 64 pairs (6%) lost to failed calls on the primary eval, more than "
                                          + "gate.max_failed_pairs = 5%",)
    assert decide(e, S.model_copy(update={"max_failed_pairs": 0.1})).passed
    e["n_samples"] = 63  # 3 of 63 (4.8%): within the default
    assert decide(e, S).passed
    assert settings_from_config(Gate(max_failed_pairs=0.2), "policy").max_failed_pairs == 0.2
