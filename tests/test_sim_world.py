"""The worlds behave as designed: covering rules raises compliance, a weak default scores low, a covering prompt
scores high, trade-offs and bloat cost something, and the judge decides from the text."""

from __future__ import annotations

import re

import pytest
from sim_helpers import judge_rows, mean_scores, run_policy

from selfimprove.sim import default_policy, generate_inputs, start_server, world_evals

# The instructions a capable optimizer writes after reading the judges' explanations (what sim-optimizer writes).
SUPPORT_FIXES = {
    "order": "Always quote the customer's order number (for example #12345) in the reply so they can see their "
             "order was looked up.",
    "promise": "Never promise a refund, an amount or a delivery date; say instead that the request has been passed "
               "to the responsible team.",
    "escalate": "If the customer mentions a chargeback, a lawyer or any legal action, do not try to resolve the case "
                "yourself: tell them it has been escalated to our disputes team, who will contact them within 48 "
                "hours, and do not offer any discount or compensation.",
    "length": "Keep every reply under 80 words; no filler or marketing sentences.",
    "language": "Always reply in the same language the customer wrote in (Spanish, French, German or English).",
    "empathy": "When the customer is upset, start by acknowledging their frustration and apologising for the trouble.",
    "blame": "Never blame the customer or suggest the problem is their fault.",
}
ROUTING_FIXES = [
    ("If a ticket describes a login the customer did not make, a hacked account or any unauthorized access, label "
     "it 'security', even if it also mentions passwords."),
    "Requests to delete or export personal data (GDPR or other privacy requests) are labelled 'security'.",
    ("Tickets from Enterprise customers (they mention the Enterprise plan, an SLA or their account manager) that "
     "report a problem or outage are labelled 'priority'; but if an Enterprise customer only asks a how-to question "
     "(for example 'How do I add a user?'), use the normal label for the topic."),
    "Tickets about items that arrived damaged or broken go to 'shipping', even when the customer asks for a refund.",
]
ROUTING_FORMAT_FIX = "Answer with the label only, in lowercase, with no other text."


@pytest.fixture(scope="module")
def support():
    with start_server("support", seed=2) as s:
        yield s


@pytest.fixture(scope="module")
def routing():
    with start_server("routing", seed=2) as s:
        yield s


def _prompt(world: str, *extra: str) -> str:
    return "\n".join([default_policy(world)["system_prompt"], *extra])


def test_covering_a_rule_raises_its_compliance_from_low_to_high(support):
    inputs = [m for m in generate_inputs("support", 400, seed=4) if "#" in m[0]["content"]][:200]
    assert len(inputs) == 200

    def compliance(prompt):
        rows = run_policy(support.base_url, "support", prompt, n=0, inputs=inputs)
        hits = [re.search(r"#\d{5}", r["input"]).group(0) in r["output"] for r in rows]
        return sum(hits) / len(hits)

    before, after = compliance(_prompt("support")), compliance(_prompt("support", SUPPORT_FIXES["order"]))
    assert before <= 0.3 and after >= 0.8, (before, after)


def test_support_weak_default_and_covering_prompt_and_the_trade_off(support):
    n = 150
    default = mean_scores(judge_rows(support.base_url, "support",
                                     run_policy(support.base_url, "support", _prompt("support"), n=n)))
    full = mean_scores(judge_rows(support.base_url, "support",
                                  run_policy(support.base_url, "support", _prompt("support", *SUPPORT_FIXES.values()),
                                             n=n)))
    no_length = [v for k, v in SUPPORT_FIXES.items() if k != "length"]
    without = mean_scores(judge_rows(support.base_url, "support",
                                     run_policy(support.base_url, "support", _prompt("support", *no_length), n=n)))
    assert 0.25 <= default["policy_compliance"] <= 0.5, default
    assert full["policy_compliance"] >= 0.8 and full["style"] >= 0.8, full
    # the length fix helps style but hurts tone: neither prompt dominates the other (Pareto matters)
    assert full["style"] - without["style"] >= 0.2 and without["tone"] - full["tone"] >= 0.1, (full, without)


def test_routing_weak_default_covering_prompt_and_the_trade_off(routing):
    n = 150
    default = mean_scores(judge_rows(routing.base_url, "routing",
                                     run_policy(routing.base_url, "routing", _prompt("routing"), n=n, temperature=0)))
    rules = mean_scores(judge_rows(routing.base_url, "routing",
                                   run_policy(routing.base_url, "routing", _prompt("routing", *ROUTING_FIXES), n=n,
                                              temperature=0)))
    both = mean_scores(judge_rows(routing.base_url, "routing",
                                  run_policy(routing.base_url, "routing",
                                             _prompt("routing", *ROUTING_FIXES, ROUTING_FORMAT_FIX), n=n,
                                             temperature=0)))
    assert 0.3 <= default["routing_accuracy"] <= 0.6 and default["output_format"] <= 0.4, default
    assert rules["routing_accuracy"] >= 0.85, rules
    # the bare-label contract costs accuracy on edge cases (no room to reason): a real trade-off
    assert both["output_format"] >= 0.85 and rules["routing_accuracy"] - both["routing_accuracy"] >= 0.08, (rules, both)


def test_bloat_and_contradictions_lower_compliance(support):
    good = _prompt("support", *SUPPORT_FIXES.values())
    padding = " ".join(["Our company values quality, integrity and customer delight in every interaction."] * 40)
    contradictory = good + "\nBe thorough: give long and detailed answers of at least 150 words."
    base = mean_scores(judge_rows(support.base_url, "support", run_policy(support.base_url, "support", good, n=120)))
    bloated = mean_scores(judge_rows(support.base_url, "support",
                                     run_policy(support.base_url, "support", good + "\n" + padding, n=120)))
    contra = mean_scores(judge_rows(support.base_url, "support",
                                    run_policy(support.base_url, "support", contradictory, n=120)))
    assert base["policy_compliance"] - bloated["policy_compliance"] >= 0.1, (base, bloated)
    assert base["policy_compliance"] - contra["policy_compliance"] >= 0.1, (base, contra)


def test_judge_explanations_name_what_the_text_shows(support):
    rows = run_policy(support.base_url, "support", _prompt("support"), n=60)
    judged = judge_rows(support.base_url, "support", rows)
    named = 0
    for row, verdict in zip(rows, judged["policy_compliance"]):
        m = re.search(r"never mentions the customer's order number \(#(\d{5})\)", verdict["explanation"])
        if m:
            named += 1
            assert "#" + m.group(1) in row["input"] and m.group(1) not in row["output"]
            assert verdict["label"] == "non_compliant"
    for row, verdict in zip(rows, judged["style"]):
        m = re.search(r"The reply is (\d+) words long", verdict["explanation"])
        assert (m is not None) == (verdict["label"] == "fail") or "customer's language" in verdict["explanation"]
    assert named >= 5


def test_judge_error_rate_and_tool_call_fallback():
    rows = None
    with start_server("support", seed=2) as clean:
        rows = run_policy(clean.base_url, "support", _prompt("support"), n=80)
        truth = [d["label"] for d in judge_rows(clean.base_url, "support", rows)["policy_compliance"]]
    with start_server("support", seed=2, judge_error_rate=0.3) as noisy:
        flipped = [d["label"] for d in judge_rows(noisy.base_url, "support", rows)["policy_compliance"]]
    wrong = sum(a != b for a, b in zip(truth, flipped)) / len(truth)
    assert 0.15 <= wrong <= 0.45, wrong
    with start_server("support", seed=2, judge_rejects_response_format=True) as tools_only:
        via_tools = [d["label"] for d in judge_rows(tools_only.base_url, "support", rows)["policy_compliance"]]
        st = tools_only.stats()["by_model"]["sim-judge"]
    assert via_tools == truth and st.get("400", 0) >= 1


def test_unknown_template_gets_a_label_from_the_choices(support):
    import pandas as pd
    from phoenix.evals import LLM, ClassificationEvaluator, evaluate_dataframe

    llm = LLM(provider="openai", model="sim-judge", base_url=support.base_url, api_key="sim",
              initial_per_second_request_rate=1000)
    ev = ClassificationEvaluator(name="odd", llm=llm, prompt_template="Is {text} a fruit?", choices=["yes", "no"])
    res = evaluate_dataframe(dataframe=pd.DataFrame({"text": ["apple", "car"]}), evaluators=[ev], hide_tqdm_bar=True)
    assert {d["label"] for d in res["odd_score"]} <= {"yes", "no"}


def test_public_evals_have_templates_with_input_and_output():
    for world in ("support", "routing"):
        evals = world_evals(world)
        assert len(evals) >= 2 and sum(e["primary"] for e in evals) == 1
        for e in evals:
            assert "{input}" in e["template"] and "{output}" in e["template"] and len(e["choices"]) == 2
