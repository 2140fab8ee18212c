"""Spans and annotations from files: parquet or JSONL, for air-gapped users and fixtures.

A spans file is OpenInference-shaped, with the column names of Phoenix's default spans frame
(`context.span_id`, `context.trace_id`, `start_time`, `attributes.llm.input_messages`, ...) or of a select
query (`llm.input_messages`), or already in the raw schema (a previous pull's `raw/spans.parquet`). JSONL is one
flat JSON object per line with those keys. Annotations come from, in order: `annotations_path`; a sibling file
`<stem>.annotations.parquet|jsonl` or, next to a file named `spans.*`, `annotations.parquet|jsonl`; else wide
columns on the spans file (`eval.<name>.label|score|explanation`, `annotation.<name>.label|score`).
Timestamps need an offset unless `naive_is_utc=True` (then a note says so).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from selfimprove.core.errors import UsageError
from selfimprove.telemetry.base import ProgressCallback, check_window, report, slice_window
from selfimprove.telemetry.raw import (
    TRACE_PREFIX,
    annotations_from_columns,
    empty_annotations,
    normalize_phoenix_annotations,
    normalize_phoenix_spans,
)

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")


class FileSource:
    """A `TelemetrySource` over a spans file (and its annotations). Files are read once, on first use."""

    name = "file"

    def __init__(self, path: str | Path, *, annotations_path: str | Path | None = None,
                 naive_is_utc: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"spans file not found: {self.path}", hint="pass a .parquet or .jsonl file")
        self.annotations_path = Path(annotations_path) if annotations_path else _sibling_annotations(self.path)
        self.naive_is_utc = naive_is_utc
        self.notes: list[str] = []
        self._spans: pd.DataFrame | None = None
        self._annotations: pd.DataFrame | None = None

    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        since, until = check_window(since, until)
        self.notes = []
        spans = self._load()[0]
        out = slice_window(spans, since, until, limit)
        report(on_progress, "spans", len(out), len(out), 1)
        if len(out) == 0:
            self.notes.append(f"no spans in {self.path} with start time in the window")
        return out

    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        spans, annotations = self._load()
        ids = set(map(str, span_ids))
        wanted = annotations["span_id"].isin(ids)
        out = annotations[wanted].reset_index(drop=True)
        report(on_progress, "annotations", len(ids), len(ids), 1)
        # annotations on spans outside the window belong to other pulls; on no span of the file at all: bad input
        on_trace = annotations["span_id"].str.startswith(TRACE_PREFIX)
        unknown = int((~wanted & ~on_trace & ~annotations["span_id"].isin(set(spans["span_id"]))).sum())
        if unknown:  # counted, never dropped silently
            self.notes.append(f"{unknown} annotations are on span ids the spans file does not have: not pulled")
        return out

    def fetch_trace_annotations(self, trace_ids: Sequence[str]) -> pd.DataFrame:
        """The file's annotations on whole traces (span id `trace:<trace id>`) of these traces."""
        annotations = self._load()[1]
        keys = {TRACE_PREFIX + str(t) for t in trace_ids}
        return annotations[annotations["span_id"].isin(keys)].reset_index(drop=True)

    def _load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._spans is None:
            frame = read_table(self.path)
            self._spans = self._normalize_spans(frame)
            if self.annotations_path is not None:
                self._annotations = _normalize_annotations(read_table(self.annotations_path),
                                                           self.naive_is_utc, self.annotations_path)
            else:
                self._annotations = annotations_from_columns(frame, naive_is_utc=True)
        return self._spans, self._annotations

    def _normalize_spans(self, frame: pd.DataFrame) -> pd.DataFrame:
        try:
            return normalize_phoenix_spans(frame, naive_is_utc=False)
        except UsageError as exc:
            if not self.naive_is_utc or "timezone" not in exc.message:
                raise UsageError(f"{self.path}: {exc.message}",
                                 hint=(exc.hint or "") + "; or read naive times as UTC (naive_is_utc)") from None
            self.notes.append(f"{self.path}: timestamps without a timezone were read as UTC")
            return normalize_phoenix_spans(frame, naive_is_utc=True)


def read_table(path: Path) -> pd.DataFrame:
    """A parquet or JSON-lines file as a frame (JSONL parsed with the json module: no type guessing)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError as exc:
                        raise UsageError(f"{path}:{number}: not a JSON object: {exc}",
                                         hint="one JSON object per line (JSONL)") from None
        return pd.DataFrame.from_records(records) if records else pd.DataFrame()
    raise UsageError(f"unsupported file type: {path}", hint=f"use one of {', '.join(SUFFIXES)}")


def _sibling_annotations(path: Path) -> Path | None:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    names = [f"{stem}.annotations{s}" for s in SUFFIXES]
    if stem == "spans":
        names += [f"annotations{s}" for s in SUFFIXES]
    for name in names:
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _normalize_annotations(frame: pd.DataFrame, naive_is_utc: bool, path: Path) -> pd.DataFrame:
    if len(frame) == 0:
        return empty_annotations()
    try:
        return normalize_phoenix_annotations(frame, naive_is_utc=naive_is_utc)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc.message}", hint=exc.hint) from None
