"""`selfimprove sim traffic` makes production in a real Phoenix: traced spans plus eval annotations with specs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from selfimprove.sim import default_policy


@pytest.mark.phoenix
def test_traffic_traces_calls_and_logs_judged_annotations(phoenix, project_name, tmp_path):
    import openai
    from phoenix.client import Client

    from selfimprove.cli.sim import app

    policy = {**default_policy("routing"), "system_prompt": "Route tickets. Answer with the label only."}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    result = CliRunner().invoke(app, ["traffic", "--world", "routing", "--n", "30", "--phoenix", phoenix.url,
                                      "--project", project_name, "--policy", str(tmp_path / "policy.json"),
                                      "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["schema"] == "selfimprove.sim.traffic/v1"
    assert summary["calls"] == summary["spans"] == 30 and summary["errors"] == 0
    assert set(summary["scores"]) == {"routing_accuracy", "output_format"}
    assert summary["scores"]["output_format"] >= 0.8  # the policy file's prompt covers the format rule

    # the instrumentor is gone: openai.OpenAI.request is the original function again
    assert "Wrapper" not in type(openai.OpenAI.__dict__["request"]).__name__
    # so is the eval instrumentor the judges ran under (the process did not have it on before)
    from selfimprove.app.instrument import EvalInstrumentor

    assert not EvalInstrumentor().is_instrumented

    px = Client(base_url=phoenix.url)
    spans = px.spans.get_spans_dataframe(project_identifier=project_name, timeout=30)
    assert sorted(spans["context.span_id"]) == sorted(summary["span_ids"])
    first = spans.iloc[0]
    assert first["span_kind"] == "LLM" and first["attributes.llm.model_name"] == "sim-small"
    assert first["attributes.llm.input_messages"][0]["message.content"] == policy["system_prompt"]
    ann = px.spans.get_span_annotations_dataframe(spans_dataframe=spans, project_identifier=project_name, timeout=30)
    assert len(ann) == 60 and set(ann["annotation_name"]) == {"routing_accuracy", "output_format"}
    spec = ann.iloc[0]["metadata"]["selfimprove.eval_spec"]
    assert spec["judge_model"] == "sim-judge" and spec["provider"] == "openai" and "{output}" in spec["template"]
    acc = ann[ann["annotation_name"] == "routing_accuracy"]
    assert abs(acc["result.score"].mean() - summary["scores"]["routing_accuracy"]) < 1e-9
    wrong = acc[acc["result.label"] == "incorrect"]
    assert all(isinstance(e, str) and "label" in e for e in wrong["result.explanation"])


def test_the_instrumentation_block_restores_even_on_error_and_respects_an_existing_one(tmp_path):
    from selfimprove.app.instrument import EvalInstrumentor, instrument, uninstrument
    from selfimprove.sim.traffic import _eval_instrumentation

    uninstrument()
    with pytest.raises(RuntimeError), _eval_instrumentation():
        assert EvalInstrumentor().is_instrumented
        raise RuntimeError("a judge blew up")
    assert not EvalInstrumentor().is_instrumented

    owner = instrument(registry_dir=tmp_path)
    try:
        with _eval_instrumentation():
            pass
        assert EvalInstrumentor().is_instrumented  # the process had it on: left on, same owner and registry
        assert instrument() is owner and owner.registry_dir == tmp_path
    finally:
        uninstrument()


@pytest.mark.phoenix
def test_traffic_specs_come_from_the_instrumentor_and_an_existing_instrumentation_is_kept(phoenix, project_name,
                                                                                        tmp_path):
    from phoenix.client import Client

    from selfimprove.app.instrument import EvalInstrumentor, instrument, uninstrument
    from selfimprove.core.records import EvalSpec
    from selfimprove.sim import start_server
    from selfimprove.sim.traffic import SPEC_KEY, eval_specs, make_traffic

    sim = start_server("support", seed=5)
    owner = instrument(registry_dir=tmp_path / "registry")  # the user's own process already records specs
    try:
        made = make_traffic("support", 8, phoenix_url=phoenix.url, project=project_name, sim_base_url=sim.base_url,
                            seed=5)
        assert EvalInstrumentor().is_instrumented and instrument() is owner
    finally:
        uninstrument()
        sim.stop()
    expected = {s["name"]: EvalSpec.model_validate(s) for s in eval_specs("support")}
    # the instrumentor recorded them (its local registry, under the user's folder) ...
    saved = {p.stem: EvalSpec.model_validate({k: v for k, v in json.loads(p.read_text()).items() if k != "schema"})
             for p in (tmp_path / "registry").glob("*.json")}
    assert saved == expected
    # ... and they travelled into Phoenix in each annotation's metadata, with phoenix-evals' own keys kept
    px = Client(base_url=phoenix.url)
    spans = px.spans.get_spans_dataframe(project_identifier=project_name, timeout=30)
    ann = px.spans.get_span_annotations_dataframe(spans_dataframe=spans, project_identifier=project_name, timeout=30)
    assert len(ann) == made["annotations"] == 8 * len(expected)
    for name, meta in zip(ann["annotation_name"], ann["metadata"]):
        assert EvalSpec.model_validate(meta[SPEC_KEY]) == expected[name]
        assert meta["model"] == "sim-judge" and meta["direction"] == "maximize"
