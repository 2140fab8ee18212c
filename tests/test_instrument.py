"""EvalInstrumentor with real phoenix-evals evaluators judged by the simulator over HTTP, and tag_policy on real
OpenInference spans."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from selfimprove.app.instrument import (
    SPEC_KEY,
    EvalInstrumentor,
    instrument,
    spec_of,
    tag_policy,
    uninstrument,
)
from selfimprove.core.records import EvalSpec, Policy
from selfimprove.evals.recover import read_registry


@pytest.fixture(scope="module")
def sim():
    from selfimprove.sim import start_server

    server = start_server("support", seed=3)
    yield server
    server.stop()


@pytest.fixture
def judges(sim):
    from phoenix.evals import LLM, ClassificationEvaluator, create_classifier

    from selfimprove.sim import world_evals

    llm = LLM(provider="openai", model="sim-judge", base_url=sim.base_url, api_key="sim",
              initial_per_second_request_rate=1000)
    compliance, tone = world_evals("support")[:2]
    return [ClassificationEvaluator(name=compliance["name"], llm=llm, prompt_template=compliance["template"],
                                    choices=compliance["choices"], temperature=0.0),
            create_classifier(name=tone["name"], llm=llm, prompt_template=tone["template"], choices=tone["choices"])]


@pytest.fixture(autouse=True)
def clean():
    uninstrument()
    yield
    uninstrument()


ROWS = pd.DataFrame({"input": ["My order #1234 arrived broken, I want a refund now!", "Where is my parcel?",
                               "Cancel my plan please."],
                     "output": ["Sorry! We will refund order #1234 today.", "It is your fault.", "Done."]},
                    index=pd.Index(["a" * 16, "b" * 16, "c" * 16], name="context.span_id"))


def _strip(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the spec key and the execution timings (which differ between any two runs)."""
    out = frame.drop(columns=[c for c in frame.columns if c.endswith("_execution_details")])
    for col in [c for c in out.columns if c.endswith("_score")]:
        out[col] = [json.dumps({**c, "metadata": {k: v for k, v in c["metadata"].items() if k != SPEC_KEY}},
                               sort_keys=True) if isinstance(c, dict) else c for c in out[col]]
    return out


def test_results_unchanged_except_the_spec_and_spec_is_complete(judges):
    from phoenix.evals import evaluate_dataframe
    from phoenix.evals.utils import to_annotation_dataframe

    plain = evaluate_dataframe(dataframe=ROWS, evaluators=judges, hide_tqdm_bar=True)
    instrument()
    stamped = evaluate_dataframe(dataframe=ROWS, evaluators=judges, hide_tqdm_bar=True)
    pd.testing.assert_frame_equal(_strip(plain), _strip(stamped))
    assert all(SPEC_KEY not in c["metadata"] for c in plain["policy_compliance_score"])
    spec = EvalSpec.model_validate(stamped["policy_compliance_score"].iloc[0]["metadata"][SPEC_KEY])
    assert spec == spec_of(judges[0])
    assert (spec.name, spec.kind, spec.judge_model, spec.provider, spec.direction) == \
        ("policy_compliance", "llm", "sim-judge", "openai", "maximize")
    assert spec.choices == {"compliant": 1.0, "non_compliant": 0.0} and spec.template.startswith("You are auditing")
    assert spec.invocation_params == {"temperature": 0.0} and spec.include_explanation
    ann = to_annotation_dataframe(dataframe=stamped)
    assert len(ann) == 6 and all(EvalSpec.model_validate(m[SPEC_KEY]).name == n
                                 for m, n in zip(ann["metadata"], ann["annotation_name"]))


def test_twice_is_a_no_op_and_uninstrument_restores(judges):
    from phoenix.evals import ClassificationEvaluator, evaluate_dataframe
    from phoenix.evals.evaluators import Evaluator, LLMEvaluator

    originals = (Evaluator.__dict__["evaluate"], LLMEvaluator.__dict__["async_evaluate"], evaluate_dataframe)
    first = instrument()
    again = EvalInstrumentor().instrument()
    assert first.is_instrumented and again.is_instrumented
    assert type(LLMEvaluator.__dict__["evaluate"]).__name__ == "FunctionWrapper"
    assert type(LLMEvaluator.__dict__["evaluate"].__wrapped__).__name__ == "function"  # not wrapped twice
    scores = judges[0].evaluate({"input": "hi", "output": "hello"})
    assert len(scores) == 1 and list(scores[0].metadata) == ["model", SPEC_KEY]
    uninstrument()
    import phoenix.evals as px_evals

    assert (Evaluator.__dict__["evaluate"], LLMEvaluator.__dict__["async_evaluate"],
            px_evals.evaluate_dataframe) == originals
    assert SPEC_KEY not in ClassificationEvaluator.evaluate(judges[0], {"input": "hi", "output": "x"})[0].metadata


def test_async_paths_and_the_registry(judges, tmp_path):
    from phoenix.evals import async_evaluate_dataframe

    instrument(registry_dir=tmp_path / "evals")
    scores = asyncio.run(judges[1].async_evaluate({"input": "hi", "output": "You are wrong."}))
    assert scores[0].metadata[SPEC_KEY]["name"] == "tone"
    frame = asyncio.run(async_evaluate_dataframe(dataframe=ROWS.iloc[:2], evaluators=judges, concurrency=2,
                                                 hide_tqdm_bar=True))
    assert all(c["metadata"][SPEC_KEY]["judge_model"] == "sim-judge" for c in frame["tone_score"])
    saved = read_registry(tmp_path)  # what snapshot falls back to: <workspace>/evals/<name>.json
    assert saved == {"policy_compliance": spec_of(judges[0]), "tone": spec_of(judges[1])}


def test_code_evaluators_get_a_code_spec():
    from phoenix.evals import create_evaluator

    @create_evaluator(name="mentions_order", kind="code")
    def mentions_order(output: str) -> bool:
        return "#" in output

    instrument()
    score = mentions_order.evaluate({"output": "order #1"})[0]
    spec = EvalSpec.model_validate(score.metadata[SPEC_KEY])
    assert (spec.kind, spec.template, spec.choices, spec.include_explanation) == ("code", None, None, False)


def test_tag_policy_marks_traced_calls(sim):
    import openai
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    policy = Policy(system_prompt="You are Acme support for {product}.", model="sim-small", temperature=0.0)
    try:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
        with tag_policy(policy, variables={"product": "widgets"}, metadata={"tenant": "acme"}) as tagged:
            client.chat.completions.create(model="sim-small", temperature=0.0, messages=[
                {"role": "system", "content": "You are Acme support for widgets."},
                {"role": "user", "content": "hello"}])
        client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "untagged"}])
    finally:
        instrumentor.uninstrument()
    tagged_span, plain_span = [dict(s.attributes) for s in exporter.get_finished_spans()]
    assert json.loads(tagged_span["metadata"]) == {"tenant": "acme", "selfimprove.policy_digest": tagged}
    assert tagged == policy.model_copy(update={"template_format": "F_STRING"}).digest  # {product}: an f-string
    import selfimprove

    assert selfimprove.tag_policy is tag_policy  # the documented public name
    assert tagged_span["llm.prompt_template.template"] == policy.system_prompt
    assert json.loads(tagged_span["llm.prompt_template.variables"]) == {"product": "widgets"}
    assert "metadata" not in plain_span


def test_spec_keeps_label_only_choices_descriptions_and_input_mappings(sim):
    from phoenix.evals import LLM, ClassificationEvaluator, bind_evaluator

    llm = LLM(provider="openai", model="sim-judge", base_url=sim.base_url, api_key="sim",
              initial_per_second_request_rate=1000)
    template = "Customer: {customer}\nReply: {reply}\nIs the reply on topic?"
    plain = ClassificationEvaluator(name="on_topic", llm=llm, prompt_template=template,
                                    choices=["on_topic", "off_topic"])
    spec = spec_of(plain)
    assert spec.labels == ("on_topic", "off_topic") and spec.choices is None and spec.label_only
    assert spec.rails == ("on_topic", "off_topic") and spec.input_mapping is None
    described = ClassificationEvaluator(name="on_topic", llm=llm, prompt_template=template,
                                        choices={"on_topic": (1.0, "answers what was asked"),
                                                 "off_topic": (0.0, "talks about something else")})
    spec = spec_of(described)
    assert spec.choices == {"on_topic": 1.0, "off_topic": 0.0} and spec.labels is None and not spec.label_only
    assert spec.label_descriptions == {"on_topic": "answers what was asked", "off_topic": "talks about something else"}
    bound = bind_evaluator(evaluator=plain, input_mapping={"customer": "attributes.input.value",
                                                           "reply": lambda row: row["out"]})
    assert spec_of(bound).input_mapping == {"customer": "attributes.input.value", "reply": None}
    # what the instrumentor stamps on real results: the bound mapping, or the one passed to one call
    instrument()
    scores = bound.evaluate({"attributes.input.value": "Where is my parcel?", "out": "It ships today."})
    stamped = EvalSpec.model_validate(scores[0].metadata[SPEC_KEY])
    assert stamped.labels == ("on_topic", "off_topic") and scores[0].score is None and scores[0].label
    assert stamped.input_mapping == {"customer": "attributes.input.value", "reply": None}
    scores = plain.evaluate({"q": "Where is my parcel?", "a": "It ships today."},
                            input_mapping={"customer": "q", "reply": "a"})
    assert EvalSpec.model_validate(scores[0].metadata[SPEC_KEY]).input_mapping == {"customer": "q", "reply": "a"}


def test_new_spec_fields_are_left_out_while_unset_so_existing_digests_hold():
    spec = EvalSpec(name="correctness", template="Q: {input}\nA: {output}\nCorrect?",
                    choices={"correct": 1.0, "incorrect": 0.0}, judge_model="gpt-4o-mini", provider="openai",
                    invocation_params={"temperature": 0.0})
    # pinned before labels / label_descriptions / input_mapping existed
    assert spec.digest == "sha256:3bf0500d5d6fdf03a2a8b205763c277a863a3f99c98d5147ef069cba01443bb3"
    assert set(spec.model_dump(mode="json")) == {"name", "kind", "template", "choices", "judge_model", "provider",
                                                 "invocation_params", "direction", "include_explanation"}
    full = spec.model_copy(update={"choices": None, "labels": ("correct", "incorrect"),
                                   "input_mapping": {"input": "question", "output": None}})
    assert EvalSpec.model_validate(full.model_dump(mode="json")) == full and full.digest != spec.digest
    with pytest.raises(ValueError, match="not both"):
        EvalSpec(name="x", choices={"a": 1.0}, labels=("a",))


def test_recover_keeps_the_new_spec_fields_and_infers_labels_without_scores():
    from selfimprove.evals.recover import recover

    carried = EvalSpec(name="on_topic", template="{customer} / {reply}", labels=("on_topic", "off_topic"),
                       judge_model="sim-judge", input_mapping={"customer": "attributes.input.value", "reply": None})
    rows = [{"span_id": f"s{i}", "name": name, "annotator_kind": "LLM", "label": label, "score": score,
             "metadata": meta, "created_at": f"2024-05-01T00:00:0{i}Z"}
            for i, (name, label, score, meta) in enumerate([
                ("on_topic", "on_topic", None, {SPEC_KEY: carried.model_dump(mode="json")}),
                ("on_topic", "off_topic", None, {SPEC_KEY: carried.model_dump(mode="json")}),
                ("vibe", "good", None, {"model": "gpt-x"}), ("vibe", "bad", None, {}),
                ("scored", "yes", 1.0, {}), ("scored", "no", 0.0, {})])]
    got = recover(rows)
    assert got.specs["on_topic"] == carried and got.spec_sources["on_topic"] == "annotation"
    assert got.specs["vibe"].labels == ("bad", "good") and got.specs["vibe"].choices is None
    assert got.specs["vibe"].label_only and got.specs["vibe"].judge_model == "gpt-x"
    assert got.specs["scored"].choices == {"no": 0.0, "yes": 1.0} and got.specs["scored"].labels is None
    assert got.results["s0"]["on_topic"].label == "on_topic" and got.results["s0"]["on_topic"].score is None
