"""EvalInstrumentor with real phoenix-evals evaluators judged by the simulator over HTTP, and tag_policy on real
OpenInference spans."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

from selfimprove.core.records import EvalSpec, Policy
from selfimprove.evals.instrument import (
    SPEC_KEY,
    EvalInstrumentor,
    instrument,
    spec_of,
    tag_policy,
    uninstrument,
)
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
    assert tagged == policy.digest
    assert tagged_span["llm.prompt_template.template"] == policy.system_prompt
    assert json.loads(tagged_span["llm.prompt_template.variables"]) == {"product": "widgets"}
    assert "metadata" not in plain_span
