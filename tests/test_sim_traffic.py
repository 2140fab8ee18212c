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
