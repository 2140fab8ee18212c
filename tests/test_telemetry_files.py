"""FileSource: OpenInference-shaped JSONL/parquet fixtures, raw round trips, and a real Phoenix export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.traffic import rest_spans, utc, wait_for_spans

from selfimprove.core.errors import UsageError
from selfimprove.telemetry import FileSource, PhoenixSource, TelemetrySource
from selfimprove.telemetry.raw import ANNOTATION_COLUMNS, SPAN_COLUMNS, empty_spans

FILES = Path(__file__).parent / "fixtures" / "files"
SPANS = FILES / "spans_openinference.jsonl"


def test_jsonl_fixture_maps_to_the_raw_schema():
    src = FileSource(SPANS)
    assert isinstance(src, TelemetrySource)
    df = src.fetch_spans(None, None)
    assert list(df.columns) == list(SPAN_COLUMNS)
    assert df.dtypes.astype(str).tolist() == empty_spans().dtypes.astype(str).tolist()
    # ordered by start time, offsets converted to UTC (12:30+02:00 is 10:30Z)
    assert df["span_id"].tolist() == ["a000000000000001", "a000000000000004", "a000000000000002",
                                      "a000000000000003"]
    by_id = df.set_index("span_id")
    assert by_id.loc["a000000000000002", "start_time"] == pd.Timestamp("2024-05-01T10:30:00Z")
    first = by_id.loc["a000000000000001"]
    assert json.loads(first["input_messages"])[1] == {"message.role": "user",
                                                      "message.content": "Where is my order?"}
    assert json.loads(first["invocation_parameters"]) == {"model": "gpt-4o-mini", "temperature": 0.2}
    assert json.loads(first["metadata"]) == {"policy_digest": "sha256:1111", "tenant": "acme"}
    assert json.loads(first["prompt_template"]) == {"template": "You are a support agent. Be brief.",
                                                    "version": "v1"}
    assert (first["prompt_tokens"], first["completion_tokens"]) == (21, 5)
    tool_call = json.loads(by_id.loc["a000000000000002", "output_messages"])[0]["message.tool_calls"][0]
    assert tool_call["tool_call.function.name"] == "track"
    failed = by_id.loc["a000000000000003"]
    assert failed["status_code"] == "ERROR" and pd.isna(failed["output_messages"])
    assert pd.isna(failed["prompt_tokens"])
    assert by_id.loc["a000000000000004", "parent_id"] == "a000000000000001"


def test_window_and_limit_on_files():
    src = FileSource(SPANS)
    df = src.fetch_spans(utc(2024, 5, 1, 10, 0, 0, 100000), utc(2024, 5, 1, 11))
    assert df["span_id"].tolist() == ["a000000000000004", "a000000000000002"]  # 11:00 itself excluded
    assert src.fetch_spans(None, None, limit=1)["span_id"].tolist() == ["a000000000000003"]
    assert len(src.fetch_spans(utc(2030, 1, 1), None)) == 0 and src.notes
    with pytest.raises(UsageError, match="no timezone"):
        src.fetch_spans(datetime(2024, 5, 1), None)


def test_eval_and_annotation_columns_become_annotations():
    src = FileSource(SPANS)
    ids = src.fetch_spans(None, None)["span_id"].tolist()
    ann = src.fetch_annotations(ids)
    assert list(ann.columns) == list(ANNOTATION_COLUMNS)
    rows = {(r.span_id, r.name): r for r in ann.itertuples()}
    assert set(rows) == {("a000000000000001", "correctness"), ("a000000000000002", "correctness"),
                         ("a000000000000004", "helpfulness")}
    wrong = rows[("a000000000000002", "correctness")]
    assert (wrong.label, wrong.score, wrong.annotator_kind) == ("incorrect", 0.0, "LLM")
    assert wrong.explanation == "Should ask for the order number."
    human = rows[("a000000000000004", "helpfulness")]
    assert human.annotator_kind == "HUMAN" and json.loads(human.metadata) == {"updated_by": "alice"}
    assert human.updated_at == pd.Timestamp(1714557600000, unit="ms", tz="UTC")
    assert len(src.fetch_annotations(["a000000000000003", "unknown"])) == 0


def test_naive_times_are_rejected_unless_declared_utc():
    with pytest.raises(UsageError, match="without a timezone"):
        FileSource(FILES / "spans_naive_times.jsonl").fetch_spans(None, None)
    src = FileSource(FILES / "spans_naive_times.jsonl", naive_is_utc=True)
    df = src.fetch_spans(None, None)
    assert df["start_time"].tolist() == [pd.Timestamp("2024-05-01T10:00:00Z")]
    assert any("read as UTC" in n for n in src.notes)


def test_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        FileSource(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context.span_id": "x"}\nnot json\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2"):
        FileSource(bad).fetch_spans(None, None)
    csv = tmp_path / "spans.csv"
    csv.write_text("a,b\n")
    with pytest.raises(UsageError, match="unsupported"):
        FileSource(csv).fetch_spans(None, None)


def test_raw_frames_round_trip_through_parquet_and_sibling_annotations(tmp_path):
    """A previous pull's raw/spans.parquet + raw/annotations.parquet read back identically."""
    src = FileSource(SPANS)
    spans = src.fetch_spans(None, None)
    ann = src.fetch_annotations(spans["span_id"])
    spans.to_parquet(tmp_path / "spans.parquet")
    ann.to_parquet(tmp_path / "annotations.parquet")
    again = FileSource(tmp_path / "spans.parquet")
    pd.testing.assert_frame_equal(again.fetch_spans(None, None), spans)
    pd.testing.assert_frame_equal(again.fetch_annotations(spans["span_id"]), ann)
    # JSONL of the raw frame too (times as ISO strings with offsets)
    lines = spans.assign(start_time=spans["start_time"].map(lambda t: t.isoformat()),
                         end_time=spans["end_time"].map(lambda t: t.isoformat()))
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps({k: (None if pd.isna(v) else v) for k, v in row.items()},
                                       default=int) + "\n" for row in lines.to_dict("records")))
    pd.testing.assert_frame_equal(FileSource(path).fetch_spans(None, None), spans)


def _flat(messages):
    """[{"message": {"role": r, "content": c}}] -> [{"message.role": r, "message.content": c}]"""
    return [{f"message.{k}": v for k, v in m["message"].items()} for m in messages]


@pytest.mark.phoenix
def test_phoenix_default_frame_exported_to_parquet_reads_like_phoenix(phoenix, project_name, tmp_path):
    """Air-gapped flow: someone saves Phoenix's default spans frame (and its annotations) to parquet."""
    from phoenix.client import Client

    client = Client(base_url=phoenix.url)
    spans = rest_spans(6, start=utc(2024, 6, 1), step=timedelta(seconds=2))
    client.spans.log_spans(project_identifier=project_name, spans=spans, timeout=30)
    wait_for_spans(client, project_name, 6)
    ids = [s["context"]["span_id"] for s in spans]
    client.spans.log_span_annotations_dataframe(dataframe=pd.DataFrame(
        {"span_id": ids[:3], "name": "correctness", "annotator_kind": "LLM", "label": "correct", "score": 1.0,
         "metadata": [{"judge": "gpt-4o-mini", "rails": ["correct", "incorrect"]}] * 3}), sync=True)

    default = client.spans.get_spans_dataframe(project_identifier=project_name, timeout=30)
    default.drop(columns=["events"]).to_parquet(tmp_path / "export.parquet")
    client.spans.get_span_annotations_dataframe(span_ids=ids, project_identifier=project_name,
                                                timeout=30).to_parquet(tmp_path / "export.annotations.parquet")

    live = PhoenixSource(phoenix.url, project_name)
    from_server = live.fetch_spans(None, None)
    from_file = FileSource(tmp_path / "export.parquet").fetch_spans(None, None)
    assert from_file["span_id"].tolist() == from_server["span_id"].tolist() == ids
    # the default frame has flat message keys, the select query nested ones: same content, other shape
    shaped = ["input_messages", "output_messages"]
    pd.testing.assert_frame_equal(from_file.drop(columns=shaped), from_server.drop(columns=shaped))
    for col in shaped:
        assert [json.loads(v) for v in from_file[col]] == [_flat(json.loads(v)) for v in from_server[col]]
    ann_file = FileSource(tmp_path / "export.parquet").fetch_annotations(ids)
    pd.testing.assert_frame_equal(ann_file, live.fetch_annotations(ids))
    assert json.loads(ann_file["metadata"][0]) == {"judge": "gpt-4o-mini", "rails": ["correct", "incorrect"]}

