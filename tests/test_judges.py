"""Judges: captured EvalSpecs replayed with real phoenix-evals evaluators against the simulator over HTTP."""

import asyncio

import pytest

from selfimprove.core.records import EvalSpec, Message
from selfimprove.evals import code_evals
from selfimprove.evals.judges import JudgeEndpoint, JudgeItem, LLMJudge, build_judges, input_text
from selfimprove.llm.accounting import Ledger
from selfimprove.llm.cache import CallCache
from selfimprove.sim import PRICES, generate_inputs, start_server, world_evals


@pytest.fixture
def sim():
    server = start_server("support", seed=0)
    yield server
    server.stop()


def _spec(i=0, **kw):
    ev = world_evals("support")[i]
    return EvalSpec(name=ev["name"], template=ev["template"], choices=ev["choices"], judge_model="sim-judge",
                    direction=ev["direction"], **kw)


def _items(n, output):
    return [JudgeItem(f"s{i}", tuple(Message(**m) for m in h), output)
            for i, h in enumerate(generate_inputs("support", n, seed=3))]


def test_llm_judge_verdicts_are_cached_and_booked(sim, tmp_path):
    ledger = Ledger(PRICES)
    judge = LLMJudge(_spec(invocation_params={"temperature": 0.0}), JudgeEndpoint(sim.base_url, "k"),
                     cache=CallCache(tmp_path), ledger=ledger)
    items = _items(6, "I promise you will get a full refund tomorrow.")
    first = asyncio.run(judge.judge(items))
    assert [j.sample_id for j in first] == [i.sample_id for i in items]
    assert all(j.error is None and j.label == "non_compliant" and j.score == 0.0 for j in first)
    assert any("promises an outcome" in j.explanation for j in first)
    assert all(j.tokens > 0 and j.cost_usd > 0 and not j.cached and j.attempts == 1 for j in first)
    assert sim.stats()["by_model"]["sim-judge"] == {"200": 6}
    # the exact phoenix-evals request: one user message, structured output, the spec's invocation params
    again = asyncio.run(judge.judge(items))
    assert [(j.label, j.explanation) for j in again] == [(j.label, j.explanation) for j in first]
    assert all(j.cached for j in again) and sim.stats()["requests"] == 6  # nothing sent twice
    snap = ledger.snapshot()
    assert (snap.calls, snap.cache_hits) == (6, 6)
    entry = next(iter((tmp_path).glob("??/*.json"))).read_text()
    assert '"temperature":0.0' in entry and "json_schema" in entry and "non_compliant" in entry


def test_judge_retries_429_and_500_and_marks_exhausted_calls_failed(sim, tmp_path):
    ledger = Ledger(PRICES)
    cache = CallCache(tmp_path)
    # 429s with Retry-After: retried below phoenix-evals (whose own 429 handling is a 5 s global cooldown)
    sim.configure(throttle_rate=0.2, retry_after_s=0.01, seed=1)
    judge = LLMJudge(_spec(), JudgeEndpoint(sim.base_url, "k", max_retries=5), cache=cache, ledger=ledger)
    out = asyncio.run(judge.judge(_items(30, "Sorry about that. Your order is on its way.")))
    assert all(j.error is None for j in out) and any(j.attempts > 1 for j in out)
    assert sim.stats()["by_status"]["429"] == sum(j.attempts - 1 for j in out)
    # 500s with one retry: some calls fail twice and come back as failed rows, not exceptions
    sim.configure(throttle_rate=0.0, error_rate=0.4)
    judge = LLMJudge(_spec(), JudgeEndpoint(sim.base_url, "k", max_retries=1), cache=cache, ledger=ledger)
    out = asyncio.run(judge.judge(_items(60, "Sorry about that. Your order is on its way.")))
    failed = [j for j in out if j.error]
    assert failed and all(j.attempts == 2 and "500" in j.error for j in failed)
    assert all(j.label in ("compliant", "non_compliant") for j in out if not j.error)
    stats = sim.stats()  # every attempt was booked once; the 30 answers cached above were not sent again
    assert stats["requests"] == ledger.snapshot().calls
    assert stats["by_status"]["200"] == 30 + sum(1 for j in out if not j.error and not j.cached)
    assert all(j.cached for j in out[:30])  # (a later input may repeat an earlier one: a hit too)


def test_code_eval_registered_by_name_and_broken_ones_are_rows(tmp_path):
    @code_evals.register("short_reply")
    def short_reply(output: str) -> bool:
        if "boom" in output:
            raise RuntimeError("boom")
        return len(output.split()) <= 5

    try:
        spec = EvalSpec(name="short_reply", kind="code", choices={"short": 1.0, "long": 0.0})
        judges, skipped = build_judges([spec, EvalSpec(name="by_hand", kind="human")],
                                       JudgeEndpoint(None, None), cache=None, ledger=Ledger())
        assert "by_hand" in skipped and set(judges) == {"short_reply"}
        items = [JudgeItem("a", (Message(role="user", content="hi"),), "ok thanks"),
                 JudgeItem("b", (Message(role="user", content="hi"),), "a much longer reply than five words"),
                 JudgeItem("c", (Message(role="user", content="hi"),), "boom"),
                 JudgeItem("d", (Message(role="user", content="hi"),), None)]
        out = asyncio.run(judges["short_reply"].judge(items))
        assert [(j.label, j.score) for j in out[:2]] == [("short", 1.0), ("long", 0.0)]
        assert "RuntimeError: boom" in out[2].error and "generation failed" in out[3].error
    finally:
        code_evals.unregister("short_reply")


def test_unreplayable_specs_are_reported_not_crashed(sim):
    bad_var = EvalSpec(name="ctx", template="Context: {reference}\nAnswer: {output}", choices={"y": 1.0, "n": 0.0},
                       judge_model="sim-judge")
    no_choices = EvalSpec(name="free", template="{input} {output}", judge_model="sim-judge")
    judges, skipped = build_judges([bad_var, no_choices, _spec()], JudgeEndpoint(sim.base_url, "k"), cache=None,
                                   ledger=Ledger())
    assert set(judges) == {"policy_compliance"}
    assert "reference" in skipped["ctx"] and "choices" in skipped["free"]


def test_input_text_for_multi_turn_history():
    hist = (Message(role="system", content="sys"), Message(role="user", content="a"),
            Message(role="assistant", content="b"), Message(role="user", content="c"))
    assert input_text(hist) == "user: a\nassistant: b\nuser: c"
    assert input_text(hist[:2]) == "a"


def test_a_label_only_spec_is_replayed_with_labels_and_no_scores(sim, tmp_path):
    ledger, cache = Ledger(PRICES), CallCache(tmp_path)
    scored = _spec()
    label_only = scored.model_copy(update={"choices": None, "labels": tuple(scored.choices)})
    judges, skipped = build_judges([label_only], JudgeEndpoint(sim.base_url, "k"), cache=cache, ledger=ledger)
    assert not skipped
    items = _items(8, "I promise you will get a full refund tomorrow.")
    out = asyncio.run(judges[label_only.name].judge(items))
    assert all(j.error is None and j.score is None and j.label in scored.choices for j in out)
    # the rails as a list make the very request the scored eval makes: the same verdicts, straight from the cache
    again = asyncio.run(LLMJudge(scored, JudgeEndpoint(sim.base_url, "k"), cache=cache, ledger=ledger).judge(items))
    assert [j.label for j in again] == [j.label for j in out] and all(j.cached for j in again)
    assert all(j.score == scored.choices[j.label] for j in again)


def test_label_descriptions_are_replayed(sim, tmp_path):
    spec = _spec(label_descriptions={"compliant": "follows every policy rule",
                                     "non_compliant": "breaks at least one rule"})
    out = asyncio.run(LLMJudge(spec, JudgeEndpoint(sim.base_url, "k"), cache=CallCache(tmp_path),
                               ledger=Ledger(PRICES)).judge(_items(2, "Sorry, your order is on its way.")))
    assert all(j.error is None and j.score in (0.0, 1.0) for j in out)
    entry = next(iter(tmp_path.glob("??/*.json"))).read_text()
    assert "breaks at least one rule" in entry  # phoenix-evals sends the descriptions (as a tool call)


def test_an_input_mapping_fills_variables_outside_the_known_aliases(sim, tmp_path):
    base = _spec()
    renamed = base.template.replace("{input}", "{customer_message}").replace("{output}", "{agent_reply}")
    assert renamed != base.template and "{customer_message}" in renamed
    mapped = base.model_copy(update={"template": renamed, "input_mapping": {
        "customer_message": "attributes.input.value", "agent_reply": "attributes.output.value"}})
    unmapped = mapped.model_copy(update={"name": "unmapped", "input_mapping": None})
    by_function = mapped.model_copy(update={"name": "by_function",
                                            "input_mapping": {"customer_message": "input", "agent_reply": None}})
    elsewhere = mapped.model_copy(update={"name": "elsewhere", "input_mapping": {
        "customer_message": "attributes.input.value", "agent_reply": "retrieval.documents"}})
    cache, ledger = CallCache(tmp_path), Ledger(PRICES)
    judges, skipped = build_judges([mapped, unmapped, by_function, elsewhere], JudgeEndpoint(sim.base_url, "k"),
                                   cache=cache, ledger=ledger)
    assert set(judges) == {mapped.name}
    assert "agent_reply (not a variable replay can fill)" in skipped["unmapped"]
    assert "computed by a function" in skipped["by_function"]
    assert "'retrieval.documents', which replay cannot fill" in skipped["elsewhere"]
    items = _items(6, "I promise you will get a full refund tomorrow.")
    out = asyncio.run(judges[mapped.name].judge(items))
    want = asyncio.run(LLMJudge(base, JudgeEndpoint(sim.base_url, "k"), cache=cache, ledger=ledger).judge(items))
    assert [(j.label, j.score) for j in out] == [(j.label, j.score) for j in want]
    assert all(j.error is None for j in out)


def test_resolve_variables():
    from selfimprove.evals.judges import resolve_variables

    fill, unknown = resolve_variables(["question", "ctx", "reply", "input"],
                                      {"reply": "$.llm.output_messages", "input": "my_column", "ctx": None})
    assert fill == {"question": "input", "reply": "output", "input": "input"}  # an unknown field falls back on
    assert list(unknown) == ["ctx"] and "function" in unknown["ctx"]        # the variable's own alias
