"""ArizeSource contract test against the real `arize` SDK (the `[arize]` extra).

No Arize server can run here, so a loopback Arrow Flight server (`fixtures.arize_flight`) answers the export
query as Arize AX's export endpoint does, with the wire frame its backend sends; everything between that frame
and our raw tables is the real SDK: `ArizeClient(...).spans.export_to_df` builds the query, sends the key,
reads the stream and runs the SDK's own `OtelTracingDataTransformer`. Like the real export (hour granularity),
the server returns rows outside the requested window.

arize 8 pins pandas<3, protobuf<7 and wrapt<2, which the dev environment does not have, so `make test` runs this
file in `.venv-arize` (the package with its `[arize]` extra); in `.venv` the SDK tests skip, saying so.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime

import pandas as pd
import pytest
from fixtures.traffic import utc

from selfimprove.core.errors import UsageError
from selfimprove.telemetry import ArizeSource, TelemetrySource
from selfimprove.telemetry.arize import INSTALL_HINT
from selfimprove.telemetry.raw import ANNOTATION_COLUMNS, SPAN_COLUMNS

SDK_MISSING = "the arize SDK is not in this venv: `make test` runs this file in .venv-arize ([arize] extra)"
KEY = "arize-test-key-0123"


def wire_table():
    """Four spans as Arize's export endpoint sends them (before the SDK's transform)."""
    import pyarrow as pa
    from fixtures.arize_flight import message_json

    starts = [pd.Timestamp(t, tz="UTC").value for t in ("2024-05-01 09:59:30", "2024-05-01 10:05:00",
                                                       "2024-05-01 10:20:00", "2024-05-01 11:00:00")]
    system = message_json("system", "You are a support agent.")
    params = json.dumps({"temperature": 0.1, "model": "gpt-4o-mini"})
    return pa.table({
        "context.span_id": ["s1", "s2", "s3", "s4"],
        "context.trace_id": ["t1", "t2", "t3", "t4"],
        "parent_id": pa.array([None, None, None, None], pa.string()),
        "name": ["ChatCompletion"] * 4,
        "span_kind": ["LLM"] * 4,
        "attributes.openinference.span.kind": ["LLM"] * 4,
        "start_time": pa.array(starts, pa.int64()),
        "end_time": pa.array([s + 2_000_000 for s in starts], pa.int64()),
        "time": pa.array(starts, pa.int64()),
        "status_code": ["OK", "OK", "ERROR", "OK"],
        "status_message": ["", "", "RateLimitError: 429", ""],
        "attributes.llm.input_messages": [[system, message_json("user", f"q{i}")] for i in range(4)],
        "attributes.llm.output_messages": [[message_json("assistant", "a0")], [message_json("assistant", "a1")],
                                           None, [message_json("assistant", "a3")]],
        "attributes.llm.invocation_parameters": [params, params, "", params],
        "attributes.llm.model_name": ["gpt-4o-mini"] * 4,
        "attributes.llm.token_count.prompt": [12.0, 14.0, None, 9.0],
        "attributes.llm.token_count.completion": [3.0, 4.0, None, 2.0],
        "attributes.llm.prompt_template.template": ["You are a support agent."] * 4,
        "attributes.llm.prompt_template.variables": ['{"tier": "gold"}', "", "", '{"tier": "free"}'],
        "attributes.metadata": ['{"policy_digest": "sha256:aa"}', '{"policy_digest": "sha256:aa"}', "", ""],
        "attributes.llm.tools": [None, ['{"tool.json_schema": "{\\"type\\": \\"function\\"}"}'], None, None],
        "eval.correctness.label": ["correct", "incorrect", None, "correct"],
        "eval.correctness.score": [1.0, 0.0, None, 1.0],
        "eval.correctness.explanation": ["fine", "missed the order id", None, "ok"],
        "annotation.helpfulness.label": [None, "unhelpful", None, None],
        "annotation.helpfulness.score": [None, 0.0, None, None],
        "annotation.helpfulness.updated_at": [None, 1714557900000.0, None, None],
        "annotation.helpfulness.updated_by": [None, "bob", None, None],
        "annotation.notes": [[], ['{"text": "check"}'], [], []],
        "trace_eval.resolved.label": [None, "yes", None, "no"],
        "trace_eval.resolved.score": [None, 1.0, None, 0.0],
        "session_eval.satisfied.label": [None, "yes", None, None],
    })


@pytest.fixture
def export_server():
    pytest.importorskip("arize", reason=SDK_MISSING)
    from fixtures.arize_flight import ArizeExportServer

    with ArizeExportServer(wire_table()) as server:
        yield server


def real_client(server):
    """The SDK's own client, pointed at the loopback server (plain gRPC, as for an on-prem host)."""
    from arize import ArizeClient

    return ArizeClient(api_key=KEY, flight_host="127.0.0.1", flight_port=server.port, flight_scheme="grpc+tcp")


def test_export_through_the_real_sdk_maps_to_the_raw_schema(export_server):
    src = ArizeSource("U3BhY2U6MQ==", "support-bot", client=real_client(export_server))
    assert isinstance(src, TelemetrySource)
    df = src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))
    query = export_server.queries[0]
    assert (query["spaceId"], query["modelId"], query["environment"]) == ("U3BhY2U6MQ==", "support-bot", "TRACING")
    assert (query["startTime"], query["endTime"]) == ("2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z")
    assert any(h.get("auth-token-bin") == [KEY.encode()] for h in export_server.headers)  # the key travelled
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
    assert pd.isna(s3["invocation_parameters"])  # the SDK turns the backend's "" into None


def test_template_variables_arrive_as_objects(export_server):
    src = ArizeSource("space", "support-bot", client=real_client(export_server))
    df = src.fetch_spans(utc(2024, 5, 1, 9), utc(2024, 5, 1, 12))
    by_id = dict(zip(df["span_id"], df["prompt_template"]))
    assert json.loads(by_id["s1"]) == {"template": "You are a support agent.", "variables": {"tier": "gold"}}
    assert json.loads(by_id["s4"])["variables"] == {"tier": "free"}


def test_evals_and_human_annotations_come_with_the_spans(export_server):
    src = ArizeSource("space", "support-bot", client=real_client(export_server))
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


def test_an_empty_export_is_a_note_not_an_error():
    pytest.importorskip("arize", reason=SDK_MISSING)
    from fixtures.arize_flight import ArizeExportServer

    with ArizeExportServer(wire_table().slice(0, 0)) as server:
        src = ArizeSource("space", "quiet", client=real_client(server))
        df = src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))
    assert len(df) == 0 and list(df.columns) == list(SPAN_COLUMNS)
    assert src.notes == ["no spans in Arize project 'quiet' (space space) in the window"]


def test_window_needs_a_start_and_timezones():
    src = ArizeSource("space", "m", client=object())
    with pytest.raises(UsageError, match="start time"):
        src.fetch_spans(None, None)
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
        assert "ARIZE_TEST_KEY" in info.value.message and KEY not in info.value.message


def test_the_key_builds_the_real_client(monkeypatch, export_server):
    from arize import ArizeClient

    monkeypatch.setenv("ARIZE_TEST_KEY", KEY)
    monkeypatch.setenv("ARIZE_FLIGHT_HOST", "127.0.0.1")
    monkeypatch.setenv("ARIZE_FLIGHT_PORT", str(export_server.port))
    monkeypatch.setenv("ARIZE_FLIGHT_SCHEME", "grpc+tcp")
    src = ArizeSource("space", "support-bot", api_key_env="ARIZE_TEST_KEY")
    assert len(src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))) == 2
    assert isinstance(src._client, ArizeClient)


def test_trace_evals_are_annotations_on_the_whole_trace(export_server):
    src = ArizeSource("space", "support-bot", client=real_client(export_server))
    spans = src.fetch_spans(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11))  # s2 (trace t2) and s3 (t3)
    ann = src.fetch_trace_annotations(spans["trace_id"])
    assert [(r.span_id, r.name, r.label, r.score) for r in ann.itertuples()] == [("trace:t2", "resolved", "yes", 1.0)]
    assert "trace:t2" not in set(src.fetch_annotations(spans["span_id"])["span_id"])
    assert src.notes == ["session evals are not used (they judge a whole session, not one call): satisfied"]
