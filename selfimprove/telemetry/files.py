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
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from selfimprove.core.errors import UsageError
from selfimprove.store.raw_tables import id_mask
from selfimprove.telemetry.base import ProgressCallback, check_window, report, slice_window
from selfimprove.telemetry.raw import (
    TRACE_PREFIX,
    concat_annotations,
    concat_spans,
    empty_annotations,
    normalize_phoenix_annotations,
    normalize_phoenix_spans,
)
from selfimprove.telemetry.wide_evals import annotations_from_columns

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")


BATCH_ROWS = 20_000  # rows read, normalised and handed on at a time: memory stays flat however large the file


class FileSource:
    """A `TelemetrySource` over a spans file (and its annotations), read in batches of `batch_rows` rows:
    `iter_spans` and `iter_annotations` stream, so a file of millions of spans is pulled in bounded memory
    (`fetch_spans` and `fetch_annotations` collect those streams into one frame). Annotations given as wide
    columns on the spans file are the exception: they are read whole."""

    name = "file"

    def __init__(self, path: str | Path, *, annotations_path: str | Path | None = None,
                 naive_is_utc: bool = False, batch_rows: int = BATCH_ROWS):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"spans file not found: {self.path}", hint="pass a .parquet or .jsonl file")
        self.annotations_path = Path(annotations_path) if annotations_path else _sibling_annotations(self.path)
        self.naive_is_utc = naive_is_utc
        self.batch_rows = batch_rows
        self.notes: list[str] = []
        self._naive_noted = False
        self._span_ids: set[str] | None = None
        self._wide: pd.DataFrame | None = None

    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        out = concat_spans(list(self.iter_spans(since, until, on_progress=on_progress)))
        if limit is not None and len(out) > limit:
            out = out.iloc[len(out) - limit:].reset_index(drop=True)
        return out

    def iter_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                   on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
        """The file's spans in [since, until), normalised, a batch at a time in file order (a span id seen in an
        earlier row is dropped: the first row wins). All of them whatever `limit`: the caller sorts and keeps
        the newest `limit`."""
        since, until = check_window(since, until)
        self.notes = []
        self._naive_noted = False
        seen: set[str] = set()
        found = 0
        for frame in read_batches(self.path, self.batch_rows):
            spans = self._normalize_spans(frame)
            spans = spans[~id_mask(spans["span_id"], seen)]
            seen.update(spans["span_id"])
            out = slice_window(spans, since, until, None)
            found += len(out)
            report(on_progress, "spans", found, None, 1)
            if len(out):
                yield out
        self._span_ids = seen
        if found == 0:
            self.notes.append(f"no spans in {self.path} with start time in the window")

    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        return concat_annotations(list(self.iter_annotations(span_ids, on_progress=on_progress)))

    def iter_annotations(self, span_ids: Sequence[str], *,
                         on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
        """The annotations on `span_ids`, a batch at a time. Annotations on spans outside the window belong to
        other pulls; those on no span of the file at all are counted in `notes` (never dropped silently)."""
        ids = set(map(str, span_ids))
        known = self._all_span_ids()
        unknown = 0
        for batch in self._annotation_batches():
            wanted = id_mask(batch["span_id"], ids)
            on_trace = batch["span_id"].str.startswith(TRACE_PREFIX).to_numpy(bool)
            unknown += int((~wanted & ~on_trace & ~id_mask(batch["span_id"], known)).sum())
            if wanted.any():
                yield batch[wanted].reset_index(drop=True)
        report(on_progress, "annotations", len(ids), len(ids), 1)
        if unknown:
            self.notes.append(f"{unknown} annotations are on span ids the spans file does not have: not pulled")

    def fetch_trace_annotations(self, trace_ids: Sequence[str]) -> pd.DataFrame:
        """The file's annotations on whole traces (span id `trace:<trace id>`) of these traces."""
        keys = {TRACE_PREFIX + str(t) for t in trace_ids}
        frames = [a[id_mask(a["span_id"], keys)] for a in self._annotation_batches()]
        return concat_annotations(frames)

    def _annotation_batches(self) -> Iterator[pd.DataFrame]:
        if self.annotations_path is None:
            if self._wide is None:  # wide eval columns on the spans file: read whole
                self._wide = annotations_from_columns(read_table(self.path), naive_is_utc=True)
            yield self._wide
            return
        for frame in read_batches(self.annotations_path, self.batch_rows):
            yield _normalize_annotations(frame, self.naive_is_utc, self.annotations_path)

    def _all_span_ids(self) -> set[str]:
        """Every span id of the file (inside the window or not)."""
        if self._span_ids is None:
            ids: set[str] = set()
            for frame in read_batches(self.path, self.batch_rows):
                ids.update(self._normalize_spans(frame)["span_id"])
            self._span_ids = ids
        return self._span_ids

    def _normalize_spans(self, frame: pd.DataFrame) -> pd.DataFrame:
        try:
            return normalize_phoenix_spans(frame, naive_is_utc=False)
        except UsageError as exc:
            if not self.naive_is_utc or "timezone" not in exc.message:
                raise UsageError(f"{self.path}: {exc.message}",
                                 hint=(exc.hint or "") + "; or read naive times as UTC (naive_is_utc)") from None
            if not self._naive_noted:
                self.notes.append(f"{self.path}: timestamps without a timezone were read as UTC")
                self._naive_noted = True
            return normalize_phoenix_spans(frame, naive_is_utc=True)


def read_table(path: Path) -> pd.DataFrame:
    """A parquet or JSON-lines file as a frame (JSONL parsed with the json module: no type guessing)."""
    import pandas as pd

    frames = list(read_batches(path, None))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_batches(path: Path, rows: int | None) -> Iterator[pd.DataFrame]:
    """A parquet or JSON-lines file as frames of at most `rows` rows (None: one frame), in file order. An empty
    file gives one empty frame."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if rows is None:
            yield pd.read_parquet(path)
            return
        import pyarrow.parquet as pq

        yielded = False
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yielded = True
            yield batch.to_pandas()
        if not yielded:
            yield pd.read_parquet(path)
        return
    if suffix not in (".jsonl", ".ndjson", ".json"):
        raise UsageError(f"unsupported file type: {path}", hint=f"use one of {', '.join(SUFFIXES)}")
    records: list[dict] = []
    yielded = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise UsageError(f"{path}:{number}: not a JSON object: {exc}",
                                     hint="one JSON object per line (JSONL)") from None
                if rows is not None and len(records) >= rows:
                    yield pd.DataFrame.from_records(records)
                    records, yielded = [], True
    if records or not yielded:
        yield pd.DataFrame.from_records(records) if records else pd.DataFrame()


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
