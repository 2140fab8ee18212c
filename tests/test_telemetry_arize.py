"""ArizeSource contract test: no Arize server can run here, so the export frame is a literal with the columns
the `arize` SDK's `export_model_to_df(..., environment=TRACING)` returns (arize/pandas/tracing/columns.py and
arize/exporter/utils/tracing.py in Arize-ai/client_python): OpenInference columns with the `attributes.` prefix,
list-of-dict messages, a JSON-string invocation_parameters, dict metadata and template variables, naive
timestamps converted from epoch nanoseconds (UTC), `eval.<name>.label|score|explanation` and
`annotation.<name>.label|score|updated_at|updated_by` columns. The stand-in client implements the export
client's method and, like the real export (hour granularity), returns rows outside the requested window."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from fixtures.traffic import utc

from selfimprove.core.errors import UsageError
from selfimprove.telemetry import ArizeSource, TelemetrySource
from selfimprove.telemetry.arize import INSTALL_HINT
from selfimprove.telemetry.raw import ANNOTATION_COLUMNS, SPAN_COLUMNS

SYS = {"message.role": "system", "message.content": "You are a support agent."}


def export_frame(start_as: str = "timestamp") -> pd.DataFrame:
    starts = [pd.Timestamp("2024-05-01 09:59:30"), pd.Timestamp("2024-05-01 10:05:00"),
              pd.Timestamp("2024-05-01 10:20:00"), pd.Timestamp("2024-05-01 11:00:00")]
    if start_as == "ns":
        starts = [int(t.value) for t in starts]
    return pd.DataFrame({
        "context.span_id": ["s1", "s2", "s3", "s4"],
        "context.trace_id": ["t1", "t2", "t3", "t4"],
        "parent_id": [None, None, None, None],
        "name": ["ChatCompletion"] * 4,
        "span_kind": ["LLM"] * 4,
        "attributes.openinference.span.kind": ["LLM"] * 4,
        "start_time": starts,
        "end_time": starts,
        "time": starts,
        "status_code": ["OK", "OK", "ERROR", "OK"],
        "status_message": ["", "", "RateLimitError: 429", ""],
        "attributes.llm.input_messages": [[SYS, {"message.role": "user", "message.content": f"q{i}"}]
                                          for i in range(4)],
        "attributes.llm.output_messages": [[{"message.role": "assistant", "message.content": "a0"}],
                                           [{"message.role": "assistant", "message.content": "a1"}],
                                           None,
                                           [{"message.role": "assistant", "message.content": "a3"}]],
        "attributes.llm.invocation_parameters": ['{"temperature": 0.1, "model": "gpt-4o-mini"}'] * 2 + [None] +
                                                ['{"temperature": 0.1, "model": "gpt-4o-mini"}'],
        "attributes.llm.model_name": ["gpt-4o-mini"] * 4,
        "attributes.llm.token_count.prompt": [12.0, 14.0, None, 9.0],
        "attributes.llm.token_count.completion": [3.0, 4.0, None, 2.0],
        "attributes.llm.token_count.total": [15.0, 18.0, None, 11.0],
        "attributes.llm.prompt_template.template": ["You are a support agent."] * 4,
        "attributes.llm.prompt_template.variables": [{"tier": "gold"}, None, None, {"tier": "free"}],
        "attributes.metadata": [{"policy_digest": "sha256:aa"}, {"policy_digest": "sha256:aa"}, None, None],
        "attributes.llm.tools": [None, [{"tool.json_schema": '{"type": "function"}'}], None, None],
        "eval.correctness.label": ["correct", "incorrect", None, "correct"],
        "eval.correctness.score": [1.0, 0.0, None, 1.0],
        "eval.correctness.explanation": ["fine", "missed the order id", None, "ok"],
        "annotation.helpfulness.label": [None, "unhelpful", None, None],
        "annotation.helpfulness.score": [None, 0.0, None, None],
        "annotation.helpfulness.updated_at": [None, 1714557900000.0, None, None],
        "annotation.helpfulness.updated_by": [None, "bob", None, None],
        "annotation.notes": [[], ['{"text": "check"}'], [], []],
    })


class StandInExportClient:
    """Implements ArizeExportClient.export_model_to_df; records its calls."""

    def __init__(self, frame: pd.DataFrame):
        self.frame, self.calls = frame, []

    def export_model_to_df(self, space_id, model_id, environment, start_time, end_time, include_actuals=False,
                           model_version=None, batch_id=None, where=None, similarity_search_params=None):
        self.calls.append({"space_id": space_id, "model_id": model_id, "environment": environment,
                           "start_time": start_time, "end_time": end_time})
        return self.frame.copy()


@pytest.mark.parametrize("start_as", ["timestamp", "ns"])
def test_export_frame_maps_to_the_raw_schema(start_as):
    client = StandInExportClient(export_frame(start_as))
    src = ArizeSource("U3BhY2U6MQ==", "support-bot", client=client)
    assert isinstance(src, TelemetrySource)
    df = src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))
    assert client.calls[0]["model_id"] == "support-bot" and client.calls[0]["start_time"] == utc(2024, 5, 1, 10)
    assert list(df.columns) == list(SPAN_COLUMNS)
    assert df["span_id"].tolist() == ["s2", "s3"]  # 09:59:30 and 11:00 (exclusive) filtered out here
    assert str(df["start_time"].dtype) == "datetime64[us, UTC]"
    assert df["start_time"][0] == pd.Timestamp("2024-05-01T10:05:00Z")
    s2, s3 = df.iloc[0], df.iloc[1]
    assert json.loads(s2["input_messages"])[1] == {"message.role": "user", "message.content": "q1"}
    assert json.loads(s2["invocation_parameters"]) == {"model": "gpt-4o-mini", "temperature": 0.1}
    assert (s2["prompt_tokens"], s2["completion_tokens"]) == (14, 4)
    assert json.loads(s2["metadata"]) == {"policy_digest": "sha256:aa"}
    assert json.loads(s2["prompt_template"]) == {"template": "You are a support agent."}
    assert json.loads(s2["tools"]) == [{"tool.json_schema": '{"type": "function"}'}]
    assert s3["status_code"] == "ERROR" and pd.isna(s3["output_messages"]) and pd.isna(s3["prompt_tokens"])


def test_evals_and_human_annotations_come_with_the_spans():
    src = ArizeSource("space", "support-bot", client=StandInExportClient(export_frame()))
    assert len(src.fetch_annotations(["s1"])) == 0 and src.notes  # nothing fetched yet
    spans = src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 12))
    ann = src.fetch_annotations(spans["span_id"])
    assert list(ann.columns) == list(ANNOTATION_COLUMNS)
    rows = {(r.span_id, r.name): r for r in ann.itertuples()}
    assert set(rows) == {("s2", "correctness"), ("s4", "correctness"), ("s2", "helpfulness")}
    evald = rows[("s2", "correctness")]
    assert (evald.label, evald.score, evald.explanation, evald.annotator_kind) == (
        "incorrect", 0.0, "missed the order id", "LLM")
    human = rows[("s2", "helpfulness")]
    assert human.annotator_kind == "HUMAN" and json.loads(human.metadata) == {"updated_by": "bob"}
    assert human.updated_at == pd.Timestamp("2024-05-01T10:05:00Z")
    assert ("s1", "correctness") not in rows  # outside the window


def test_window_needs_a_start_and_timezones():
    src = ArizeSource("space", "m", client=StandInExportClient(export_frame()))
    with pytest.raises(UsageError, match="start time"):
        src.fetch_spans(None, None)
    from datetime import datetime

    with pytest.raises(UsageError, match="no timezone"):
        src.fetch_spans(datetime(2024, 5, 1), None)


def test_missing_sdk_or_key_is_a_clear_usage_error(monkeypatch):
    monkeypatch.delenv("ARIZE_TEST_KEY", raising=False)
    src = ArizeSource("space", "m", api_key_env="ARIZE_TEST_KEY")
    with pytest.raises(UsageError) as info:
        src.fetch_spans(utc(2024, 5, 1), utc(2024, 5, 2))
    if importlib.util.find_spec("arize") is None:
        assert "not installed" in info.value.message and info.value.hint == INSTALL_HINT
    else:
        assert "ARIZE_TEST_KEY" in info.value.message
