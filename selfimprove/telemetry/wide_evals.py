"""Wide eval and annotation columns on a spans frame (Phoenix SpanEvaluations, Arize exports, span files) ->
the raw annotations schema (selfimprove.telemetry.raw)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfimprove.telemetry.raw import (
    _SPAN_SOURCES,
    TRACE_PREFIX,
    _column,
    empty_annotations,
    is_missing,
    normalize_phoenix_annotations,
)

if TYPE_CHECKING:
    import pandas as pd


def annotations_from_columns(df: pd.DataFrame, *, naive_is_utc: bool = True) -> pd.DataFrame:
    """Wide eval/annotation columns on a spans frame -> the raw annotations schema.

    `eval.<name>.label|score|explanation` (Phoenix SpanEvaluations, Arize evals) become annotator_kind 'LLM';
    `annotation.<name>.label|score` (Arize human annotations, with `.updated_at` epoch ms and `.updated_by`)
    become 'HUMAN'; `trace_eval.<name>.*` (Arize trace evals) become 'LLM' annotations on the whole trace (span
    id `trace:<trace id>`, one per trace however many of its rows repeat it). A row with neither label nor
    score for a name carries no annotation."""
    import pandas as pd

    if df is None or len(df) == 0:
        return empty_annotations()
    if "context.span_id" not in df.columns and df.index.name == "context.span_id":
        df = df.reset_index()
    span_ids = _column(df, _SPAN_SOURCES["span_id"])
    trace_keys = [None if is_missing(t) else TRACE_PREFIX + str(t) for t in _column(df, _SPAN_SOURCES["trace_id"])]
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for col in df.columns:
        for prefix, kind in (("eval.", "LLM"), ("annotation.", "HUMAN"), ("trace_eval.", "TRACE")):
            if col.startswith(prefix) and "." in col[len(prefix):]:
                name, field = col[len(prefix):].rsplit(".", 1)
                groups.setdefault((name, kind), {})[field] = col
    rows, seen = [], set()
    for (name, kind), fields in sorted(groups.items()):
        values = {f: df[c].tolist() for f, c in fields.items()}
        keys = trace_keys if kind == "TRACE" else span_ids
        for i, span_id in enumerate(keys):
            label, score = values.get("label", [None] * len(df))[i], values.get("score", [None] * len(df))[i]
            if span_id is None or (is_missing(label) and is_missing(score)) or (span_id, name, kind) in seen:
                continue
            seen.add((span_id, name, kind))  # a trace eval repeated on each row of its trace is one annotation
            updated = values.get("updated_at", [None] * len(df))[i]
            if isinstance(updated, (int, float)) and not is_missing(updated):
                updated = pd.Timestamp(int(updated), unit="ms", tz="UTC")
            by = values.get("updated_by", [None] * len(df))[i]
            rows.append({"span_id": span_id, "annotation_name": name,
                         "annotator_kind": "LLM" if kind == "TRACE" else kind, "label": label,
                         "score": score, "explanation": values.get("explanation", [None] * len(df))[i],
                         "metadata": None if is_missing(by) else {"updated_by": by},
                         "identifier": "", "created_at": updated, "updated_at": updated})
    return normalize_phoenix_annotations(pd.DataFrame(rows), naive_is_utc=naive_is_utc)
