"""The raw schema every telemetry source maps to: one spans frame and one annotations frame.

These frames are what `pull` writes to `raw/spans.parquet` and `raw/annotations.parquet`; `snapshot` parses them.
Nested values (messages, invocation parameters, metadata, prompt template, tools) are kept in the shape the source
returned (flat `message.role` keys, nested `{"message": {...}}`, ...) but serialised as canonical JSON text so
parquet round-trips them exactly; every non-null cell of those columns is valid JSON (`to_json_text`). Times are
`datetime64[us, UTC]` (Phoenix stores microseconds). A trace-level annotation (Phoenix trace annotations, Arize
`trace_eval.*`) is an annotations row whose span id is `trace:<trace id>` (`TRACE_PREFIX`). Row order: spans by (start_time, span_id); annotations by
(span_id, name, identifier, updated_at).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from selfimprove.core.canonical import canonical_json
from selfimprove.core.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

SPAN_COLUMNS = ("span_id", "trace_id", "parent_id", "name", "span_kind", "start_time", "end_time", "status_code",
                "status_message", "input_messages", "output_messages", "invocation_parameters", "model_name",
                "prompt_tokens", "completion_tokens", "metadata", "prompt_template", "tools")
ANNOTATION_COLUMNS = ("span_id", "name", "annotator_kind", "label", "score", "explanation", "metadata",
                      "identifier", "created_at", "updated_at")
# the other spans of the pulled traces (parents, roots): structure only, for joining annotations made on them
TREE_COLUMNS = ("span_id", "trace_id", "parent_id", "name", "span_kind", "start_time")
JSON_SPAN_COLUMNS = ("input_messages", "output_messages", "invocation_parameters", "metadata", "prompt_template",
                     "tools")
_TIME = "datetime64[us, UTC]"
SPAN_DTYPES = {**{c: "str" for c in SPAN_COLUMNS}, "start_time": _TIME, "end_time": _TIME,
               "prompt_tokens": "Int64", "completion_tokens": "Int64"}
ANNOTATION_DTYPES = {**{c: "str" for c in ANNOTATION_COLUMNS}, "score": "float64", "created_at": _TIME,
                     "updated_at": _TIME}

# raw column <- candidate source columns, first present wins: the Phoenix default frame and Arize / files use
# `attributes.`-prefixed names, a Phoenix select query bare attribute names, a raw frame its own names (so a
# raw frame normalises to itself).
_SPAN_SOURCES = {
    "span_id": ("context.span_id", "span_id"),
    "trace_id": ("context.trace_id", "trace_id"),
    "parent_id": ("parent_id", "context.parent_id"),
    "name": ("name",),
    "span_kind": ("span_kind", "attributes.openinference.span.kind", "openinference.span.kind"),
    "start_time": ("start_time",),
    "end_time": ("end_time",),
    "status_code": ("status_code",),
    "status_message": ("status_message",),
    "input_messages": ("attributes.llm.input_messages", "llm.input_messages", "input_messages"),
    "output_messages": ("attributes.llm.output_messages", "llm.output_messages", "output_messages"),
    "invocation_parameters": ("attributes.llm.invocation_parameters", "llm.invocation_parameters",
                              "invocation_parameters"),
    "model_name": ("attributes.llm.model_name", "llm.model_name", "model_name"),
    "prompt_tokens": ("attributes.llm.token_count.prompt", "llm.token_count.prompt", "prompt_tokens"),
    "completion_tokens": ("attributes.llm.token_count.completion", "llm.token_count.completion",
                          "completion_tokens"),
    "metadata": ("attributes.metadata", "metadata"),
    "tools": ("attributes.llm.tools", "llm.tools", "tools"),
}
_TEMPLATE_PARTS = ("template", "variables", "version")
TRACE_PREFIX = "trace:"  # the annotations table's span id for an annotation on a whole trace


def empty_spans() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=SPAN_DTYPES[c]) for c in SPAN_COLUMNS})


def empty_annotations() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=ANNOTATION_DTYPES[c]) for c in ANNOTATION_COLUMNS})


def arrow_schema(kind: str) -> Any:
    """The pyarrow schema of a raw table ("spans", "annotations" or "tree"): what `pull` writes, batch by batch,
    whatever types one batch's values would infer (a batch whose column is all null stays a string column)."""
    import pyarrow as pa

    columns, dtypes = {"spans": (SPAN_COLUMNS, SPAN_DTYPES), "annotations": (ANNOTATION_COLUMNS, ANNOTATION_DTYPES),
                       "tree": (TREE_COLUMNS, SPAN_DTYPES)}[kind]
    types = {"str": pa.string(), "Int64": pa.int64(), "float64": pa.float64(), _TIME: pa.timestamp("us", tz="UTC")}
    return pa.schema([pa.field(c, types[dtypes[c]]) for c in columns])


SPAN_ORDER = ["start_time", "span_id"]  # the raw spans table's row order (nulls first)
ANNOTATION_ORDER = ["span_id", "name", "identifier", "updated_at"]  # the raw annotations table's row order


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA (not an empty list or dict)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:  # pragma: no cover
        return False


def _plain(value: Any) -> Any:
    """Nested lists/dicts of plain Python values: numpy arrays (parquet lists) to lists, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if getattr(value, "ndim", 0) >= 1 and hasattr(value, "tolist"):  # numpy array (parquet list cell)
        return [_plain(v) for v in value.tolist()]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def to_json_text(value: Any) -> str | None:
    """Canonical JSON text of a nested value, or None when missing. A string is taken as JSON text (parsed and
    re-serialised); an empty string is missing; a string that is not JSON becomes a JSON string literal, so
    every non-null cell of a JSON column parses (the snapshot parser then flags the odd shape)."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return canonical_json(_plain(value)).decode("utf-8")


def _column(df: pd.DataFrame, candidates: tuple[str, ...]) -> list[Any]:
    for name in candidates:
        if name in df.columns:
            return df[name].tolist()
    return [None] * len(df)


def _prompt_templates(df: pd.DataFrame) -> list[Any]:
    for prefix in ("attributes.llm.prompt_template", "llm.prompt_template", "prompt_template"):
        if prefix in df.columns:
            return df[prefix].tolist()
        parts = {p: df[f"{prefix}.{p}"].tolist() for p in _TEMPLATE_PARTS if f"{prefix}.{p}" in df.columns}
        if parts:
            rows = []
            for i in range(len(df)):
                row = {p: values[i] for p, values in parts.items() if not is_missing(values[i])}
                rows.append(row or None)
            return rows
    return [None] * len(df)


def _token_counts(df: pd.DataFrame, which: str) -> list[Any]:
    values = _column(df, _SPAN_SOURCES[f"{which}_tokens"])
    if all(is_missing(v) for v in values):
        for name in ("attributes.llm.token_count", "llm.token_count"):  # a select of the whole nested dict
            if name in df.columns:
                return [d.get(which) if isinstance(d, dict) else None for d in df[name]]
    return values


def utc_times(values: Any, what: str, *, naive_is_utc: bool = False) -> pd.Series:
    """A `datetime64[us, UTC]` series from datetimes, ISO strings or epoch nanoseconds. Naive values raise
    UsageError unless `naive_is_utc` (a source that knows its naive times are UTC, e.g. an Arize export)."""
    import pandas as pd

    series = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(_TIME)
    naive = pd.api.types.is_datetime64_dtype(series) or _has_naive(series)
    if naive and not naive_is_utc and series.notna().any():
        raise UsageError(f"{what} has timestamps without a timezone",
                         hint="write times with an offset (e.g. 2024-05-01T00:00:00Z)")
    if pd.api.types.is_datetime64_dtype(series):
        return series.dt.tz_localize("UTC").astype(_TIME)
    if pd.api.types.is_numeric_dtype(series):  # epoch nanoseconds (OTel, an Arize export)
        return pd.to_datetime(series, unit="ns", utc=True).astype(_TIME)
    return pd.to_datetime(series, utc=True, format="ISO8601").astype(_TIME)


def _has_naive(series: pd.Series) -> bool:
    for value in series:
        if is_missing(value):
            continue
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                continue  # pandas reports it when converting
        if isinstance(value, datetime) and value.tzinfo is None:
            return True
    return False


def _frame(columns: dict[str, list[Any]], dtypes: dict[str, str], order: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    data = {}
    for name in order:
        values = columns[name]
        if dtypes[name] == "str":
            values = [None if is_missing(v) else str(v) for v in values]
        elif dtypes[name] == "Int64":
            values = [None if is_missing(v) else int(v) for v in values]
        elif dtypes[name] == "float64":
            values = [math.nan if is_missing(v) else float(v) for v in values]
        data[name] = pd.Series(values, dtype=dtypes[name] if dtypes[name] != _TIME else object)
    return pd.DataFrame(data)


def normalize_phoenix_spans(df: pd.DataFrame, *, naive_is_utc: bool = False) -> pd.DataFrame:
    """Map a Phoenix spans frame (the default frame, a select-query frame with `context.span_id` as index, an
    Arize export or an OpenInference-shaped file) to the raw spans schema. Missing columns become nulls.
    Duplicate span ids keep their first row."""
    if df is None or len(df) == 0:
        return empty_spans()
    if "context.span_id" not in df.columns and "span_id" not in df.columns and df.index.name in (
            "context.span_id", "span_id"):
        df = df.reset_index()
    if not any(c in df.columns for c in _SPAN_SOURCES["span_id"]):
        raise UsageError("spans have no span id column", hint="expected `context.span_id` (or `span_id`)")
    columns = {raw: _column(df, sources) for raw, sources in _SPAN_SOURCES.items()}
    columns["prompt_template"] = _prompt_templates(df)
    columns["prompt_tokens"] = _token_counts(df, "prompt")
    columns["completion_tokens"] = _token_counts(df, "completion")
    for name in JSON_SPAN_COLUMNS:
        columns[name] = [to_json_text(v) for v in columns[name]]
    out = _frame(columns, SPAN_DTYPES, SPAN_COLUMNS)
    for name in ("start_time", "end_time"):
        out[name] = utc_times(df[name] if name in df.columns else [None] * len(df), name,
                              naive_is_utc=naive_is_utc)
    out = out.drop_duplicates("span_id", keep="first")
    return out.sort_values(SPAN_ORDER, kind="stable", na_position="first").reset_index(drop=True)


def tree_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Span structure rows (`TREE_COLUMNS`; times as datetimes or ISO strings) -> a frame ordered by (start_time,
    span_id), first row per span id."""
    import pandas as pd

    columns = {c: [r.get(c) for r in rows] for c in TREE_COLUMNS}
    out = _frame(columns, SPAN_DTYPES, TREE_COLUMNS)
    out["start_time"] = utc_times(columns["start_time"], "start_time") if rows else pd.Series([], dtype=_TIME)
    out = out.drop_duplicates("span_id", keep="first")
    return out.sort_values(SPAN_ORDER, kind="stable", na_position="first").reset_index(drop=True)


def concat_spans(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Raw spans frames joined: first row per span id kept, in the raw row order."""
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_spans()
    out = pd.concat(frames, ignore_index=True).drop_duplicates("span_id", keep="first")
    return out.sort_values(SPAN_ORDER, kind="stable", na_position="first").reset_index(drop=True)


def concat_annotations(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Raw annotations frames joined, in the raw row order."""
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_annotations()
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(ANNOTATION_ORDER, kind="stable", na_position="first").reset_index(drop=True)


def normalize_phoenix_annotations(df: pd.DataFrame, *, naive_is_utc: bool = False) -> pd.DataFrame:
    """Map span annotations to the raw annotations schema. Accepts Phoenix's fetched frame (index `span_id`,
    `annotation_name`, `result.label`, ...), `to_annotation_dataframe` output (`context.span_id`, `label`,
    ...) or a frame already in the raw schema. `identifier` defaults to '' (Phoenix's default)."""
    if df is None or len(df) == 0:
        return empty_annotations()
    if not {"span_id", "context.span_id"} & set(df.columns) and df.index.name in ("span_id", "context.span_id"):
        df = df.reset_index()
    n = len(df)

    def pick(*names: str) -> list[Any]:
        return _column(df, names)

    columns = {
        "span_id": pick("span_id", "context.span_id"),
        "name": pick("annotation_name", "name"),
        "annotator_kind": pick("annotator_kind"),
        "label": pick("result.label", "label"),
        "score": pick("result.score", "score"),
        "explanation": pick("result.explanation", "explanation"),
        "metadata": [to_json_text(v) for v in pick("metadata")],
        "identifier": ["" if is_missing(v) else v for v in pick("identifier")],
        "created_at": [None] * n, "updated_at": [None] * n,
    }
    if any(is_missing(v) for v in columns["span_id"]) or any(is_missing(v) for v in columns["name"]):
        raise UsageError("annotations need a span id and a name on every row",
                         hint="columns `span_id` (or `context.span_id`) and `annotation_name` (or `name`)")
    out = _frame(columns, ANNOTATION_DTYPES, ANNOTATION_COLUMNS)
    for name in ("created_at", "updated_at"):
        out[name] = utc_times(df[name] if name in df.columns else [None] * n, name, naive_is_utc=naive_is_utc)
    return out.sort_values(ANNOTATION_ORDER, kind="stable", na_position="first").reset_index(drop=True)

