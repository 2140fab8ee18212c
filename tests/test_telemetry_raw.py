"""The raw schema: JSON serialisation of nested values, normalisation of every source shape, parquet round trips."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfimprove.core.errors import UsageError
from selfimprove.telemetry.raw import (
    ANNOTATION_COLUMNS,
    SPAN_COLUMNS,
    concat_spans,
    empty_annotations,
    empty_spans,
    normalize_phoenix_annotations,
    normalize_phoenix_spans,
    to_json_text,
    utc_times,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(json_values)
def test_json_text_round_trips_any_json_value(value):
    text = to_json_text(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        assert text is None
        return
    if isinstance(value, str):  # a string is JSON text when it parses, else a string literal
        try:
            assert json.loads(text) == json.loads(value, parse_constant=lambda _: None)  # NaN -> null
        except ValueError:
            assert json.loads(text) == value
        return
    assert json.loads(text) == value
    assert to_json_text(json.dumps(value, indent=2)) == text  # JSON text is parsed and re-serialised


def test_json_text_of_parquet_cells_and_odd_values():
    assert to_json_text(np.array([{"a": np.int64(1)}, {"b": np.float64(float("nan"))}], dtype=object)) == \
        '[{"a":1},{"b":null}]'
    assert to_json_text("not json {") == '"not json {"'  # still valid JSON: a string literal
    assert to_json_text("  ") is None
    assert to_json_text(float("nan")) is None and to_json_text(pd.NA) is None
    assert to_json_text([]) == "[]" and to_json_text({}) == "{}"


span_rows = st.lists(st.fixed_dictionaries({
    "context.span_id": st.text("0123456789abcdef", min_size=16, max_size=16),
    "context.trace_id": st.text("0123456789abcdef", min_size=32, max_size=32),
    "start_time": st.datetimes(min_value=pd.Timestamp("2000-01-01").to_pydatetime(),
                               max_value=pd.Timestamp("2099-01-01").to_pydatetime()),
    "attributes.llm.input_messages": st.lists(st.fixed_dictionaries(
        {"message.role": st.sampled_from(["system", "user"]), "message.content": st.text(max_size=30)}),
        max_size=3),
    "attributes.llm.token_count.prompt": st.none() | st.integers(0, 10**6),
    "attributes.metadata": st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
}), max_size=8)


@settings(max_examples=40, deadline=None)
@given(span_rows)
def test_normalised_spans_survive_parquet_and_renormalisation(rows):
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["start_time"] = frame["start_time"].dt.tz_localize("UTC")
        frame["end_time"] = frame["start_time"]
    raw = normalize_phoenix_spans(frame)
    assert list(raw.columns) == list(SPAN_COLUMNS)
    assert raw["span_id"].is_unique and len(raw) == len({r["context.span_id"] for r in rows})
    buf = io.BytesIO()
    raw.to_parquet(buf)
    back = pd.read_parquet(io.BytesIO(buf.getvalue()))
    pd.testing.assert_frame_equal(back, raw)
    pd.testing.assert_frame_equal(normalize_phoenix_spans(back), raw)  # a raw frame normalises to itself


def test_select_query_frame_with_span_id_index_and_nested_token_counts():
    frame = pd.DataFrame({
        "context.trace_id": ["t1"], "start_time": pd.to_datetime(["2024-05-01T10:00:00Z"]),
        "end_time": pd.to_datetime(["2024-05-01T10:00:01Z"]),
        "llm.input_messages": [[{"message": {"role": "user", "content": "hi"}}]],
        "llm.token_count": [{"prompt": 5, "completion": 2, "total": 7}],
        "llm.prompt_template": [{"template": "T {x}", "variables": {"x": "1"}}],
    }, index=pd.Index(["s1"], name="context.span_id"))
    raw = normalize_phoenix_spans(frame).iloc[0]
    assert raw["span_id"] == "s1" and raw["trace_id"] == "t1"
    assert (raw["prompt_tokens"], raw["completion_tokens"]) == (5, 2)
    assert json.loads(raw["input_messages"]) == [{"message": {"content": "hi", "role": "user"}}]
    assert json.loads(raw["prompt_template"]) == {"template": "T {x}", "variables": {"x": "1"}}


def test_spans_need_ids_and_aware_times():
    with pytest.raises(UsageError, match="span id"):
        normalize_phoenix_spans(pd.DataFrame({"name": ["x"]}))
    with pytest.raises(UsageError, match="without a timezone"):
        normalize_phoenix_spans(pd.DataFrame({"context.span_id": ["a"], "start_time": ["2024-05-01T10:00:00"]}))
    assert utc_times(["2024-05-01T12:00:00+02:00", None], "t").tolist()[0] == pd.Timestamp("2024-05-01T10:00Z")
    assert normalize_phoenix_spans(pd.DataFrame()).equals(empty_spans())


def test_concat_keeps_first_row_per_span_in_raw_order():
    a = normalize_phoenix_spans(pd.DataFrame({"context.span_id": ["b", "a"], "name": ["first", "first"],
                                              "start_time": ["2024-01-02T00:00Z", "2024-01-01T00:00Z"]}))
    b = normalize_phoenix_spans(pd.DataFrame({"context.span_id": ["a", "c"], "name": ["second", "second"],
                                              "start_time": ["2024-01-01T00:00Z", "2024-01-03T00:00Z"]}))
    out = concat_spans([a, b, empty_spans()])
    assert out["span_id"].tolist() == ["a", "b", "c"] and out["name"].tolist() == ["first", "first", "second"]


def test_annotations_from_phoenix_evals_to_annotation_dataframe():
    from phoenix.evals.utils import to_annotation_dataframe

    scores = [{"name": "correctness", "score": s, "label": lbl, "explanation": e, "metadata": {"model": "m"},
               "kind": "llm", "direction": "maximize"}
              for s, lbl, e in [(1.0, "correct", "ok"), (0.0, "incorrect", "wrong")]]
    results = pd.DataFrame({"input": ["a", "b"], "correctness_score": scores},
                           index=pd.Index(["s1", "s2"], name="context.span_id"))
    raw = normalize_phoenix_annotations(to_annotation_dataframe(dataframe=results))
    assert list(raw.columns) == list(ANNOTATION_COLUMNS)
    assert raw[["span_id", "name", "label", "score", "annotator_kind", "identifier"]].values.tolist() == [
        ["s1", "correctness", "correct", 1.0, "LLM", ""], ["s2", "correctness", "incorrect", 0.0, "LLM", ""]]
    assert json.loads(raw["metadata"][0])["model"] == "m"
    assert raw["created_at"].isna().all() and str(raw["created_at"].dtype) == "datetime64[us, UTC]"


def test_phoenix_fetched_annotation_frame_shape():
    fetched = pd.DataFrame({
        "id": ["U3Bhbjox"], "created_at": ["2024-05-01T10:00:00+00:00"], "updated_at": ["2024-05-01T10:00:05+00:00"],
        "source": ["API"], "user_id": [None], "annotation_name": ["tone"], "annotator_kind": ["HUMAN"],
        "metadata": [{"rails": ["ok", "rude"]}], "identifier": ["run-1"], "result.label": ["ok"],
        "result.score": [None], "result.explanation": [None]}, index=pd.Index(["s9"], name="span_id"))
    raw = normalize_phoenix_annotations(fetched).iloc[0]
    assert (raw["span_id"], raw["name"], raw["identifier"], raw["label"]) == ("s9", "tone", "run-1", "ok")
    assert pd.isna(raw["score"]) and raw["updated_at"] == pd.Timestamp("2024-05-01T10:00:05Z")
    assert normalize_phoenix_annotations(pd.DataFrame()).equals(empty_annotations())
    with pytest.raises(UsageError, match="span id and a name"):
        normalize_phoenix_annotations(pd.DataFrame({"span_id": ["x"], "label": ["y"]}))


def test_trace_evals_become_one_annotation_per_trace():
    import pandas as pd

    from selfimprove.telemetry.wide_evals import annotations_from_columns

    frame = pd.DataFrame({"context.span_id": ["a", "b", "c"], "context.trace_id": ["t1", "t1", "t2"],
                          "trace_eval.resolved.label": [None, "yes", "no"],
                          "trace_eval.resolved.score": [None, 1.0, 0.0],
                          "eval.correctness.label": ["ok", None, None]})
    ann = annotations_from_columns(frame)
    rows = {(r.span_id, r.name): (r.label, r.annotator_kind) for r in ann.itertuples()}
    assert rows == {("trace:t1", "resolved"): ("yes", "LLM"), ("trace:t2", "resolved"): ("no", "LLM"),
                    ("a", "correctness"): ("ok", "LLM")}
