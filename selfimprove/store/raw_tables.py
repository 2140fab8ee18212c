"""Writing a pull's raw tables as the frames arrive, in bounded memory.

`write_spans` takes raw spans frames in any order (pages, file batches), keeps the first row of each span id,
sorts them by the raw order through an external sort (`SortedTable`), keeps the newest `limit`, leaves out the
ids already pulled (`exclude`, counted) and writes `raw/spans.parquet` a batch at a time. What pull needs next
(the ids and traces to fetch annotations and trees for, the window's first and last start time, the newest
fetched spans for the cursor) comes back in `SpansWritten`; nothing else of the spans stays in memory.
`write_annotations` does the same for annotation frames (only rows on `wanted` span ids).
The tables are exactly those the whole-frame path wrote (same rows, order, columns and content digest).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selfimprove.store.sorted_table import SortedTable, write_table_batches


@dataclass
class SpansWritten:
    """What `write_spans` wrote: `rows` spans (after the limit and the exclusion); `fetched` before the exclusion;
    `recent`: (start time, span id) of the fetched spans within `overlap_s` of the newest, for the cursor."""

    rows: int = 0
    fetched: int = 0
    excluded: int = 0
    span_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    nested_trace_ids: list[str] = field(default_factory=list)  # traces of spans that have a parent
    first_start: datetime | None = None
    last_start: datetime | None = None
    recent: list[tuple[datetime, str]] = field(default_factory=list)


def id_mask(ids: Any, known: Collection[str]) -> Any:
    """A boolean array: which of `ids` (a pandas Series) are in `known`, by one set lookup each. pandas' `isin`
    with a Python set copies the whole set on every call: quadratic when each batch of a pull is tested against
    every id seen so far."""
    import numpy as np

    return np.fromiter((i in known for i in ids.tolist()), bool, len(ids))


def _time(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def write_spans(path: str | Path, schema: Any, order: list[str], frames: Iterable[Any], *, limit: int | None,
                exclude: set[str], overlap_s: float) -> SpansWritten:
    """Write raw spans frames (pandas, raw schema) to `path` sorted by `order`; see the module docstring. Nothing
    is written when no span is left (`rows` 0)."""
    import pyarrow as pa

    out = SpansWritten()
    seen: set[str] = set()
    with SortedTable(schema, order) as table:
        for frame in frames:
            fresh = frame[~id_mask(frame["span_id"], seen)]
            seen.update(fresh["span_id"])
            table.add(pa.Table.from_pandas(fresh, preserve_index=False))
        seen.clear()
        skip = table.rows - limit if limit is not None and table.rows > limit else 0
        tail: deque[tuple[int, str]] = deque()

        def kept() -> Iterator[Any]:
            nonlocal skip
            for batch in table.batches():
                if skip:
                    dropped = min(skip, batch.num_rows)
                    batch, skip = batch.slice(dropped), skip - dropped
                if batch.num_rows == 0:
                    continue
                ids = batch.column("span_id").to_pylist()
                micros = batch.column("start_time").cast(pa.int64()).to_pylist()
                out.fetched += len(ids)
                for t, span_id in zip(micros, ids):
                    if t is not None:
                        tail.append((t, span_id))
                        while tail[0][0] < t - overlap_s * 1e6:
                            tail.popleft()
                if exclude:
                    mask = [i not in exclude for i in ids]
                    out.excluded += mask.count(False)
                    batch = batch.filter(pa.array(mask))
                    ids = batch.column("span_id").to_pylist()
                    micros = batch.column("start_time").cast(pa.int64()).to_pylist()
                if batch.num_rows == 0:
                    continue
                traces = batch.column("trace_id").to_pylist()
                parents = batch.column("parent_id").to_pylist()
                out.span_ids += ids
                out.trace_ids += [t for t in traces if t is not None]
                out.nested_trace_ids += [t for t, p in zip(traces, parents) if t is not None and p is not None]
                times = [t for t in micros if t is not None]
                if times:
                    first, last = min(times), max(times)
                    out.first_start = _time(first) if out.first_start is None else min(out.first_start, _time(first))
                    out.last_start = _time(last) if out.last_start is None else max(out.last_start, _time(last))
                out.rows += batch.num_rows
                yield batch

        batches = kept()
        head = next(batches, None)  # None: every span was excluded (counted), nothing to write
        if head is not None:
            write_table_batches(path, schema, _chain(head, batches))
    out.recent = [(_time(t), span_id) for t, span_id in tail]
    return out


def _chain(head: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield head
    yield from rest


def write_annotations(path: str | Path, schema: Any, order: list[str], frames: Iterable[Any],
                      wanted: set[str] | None = None) -> tuple[int, Counter]:
    """Write raw annotation frames (pandas) to `path` sorted by `order`, only rows on `wanted` span ids when
    given; (rows, rows per annotation name)."""
    import pyarrow as pa

    names: Counter = Counter()
    with SortedTable(schema, order) as table:
        for frame in frames:
            if wanted is not None:
                frame = frame[id_mask(frame["span_id"], wanted)]
            names.update(frame["name"].tolist())
            table.add(pa.Table.from_pandas(frame, preserve_index=False))
        rows = table.rows
        write_table_batches(path, schema, table.batches())
    return rows, names
