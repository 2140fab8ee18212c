"""Rows arriving in any order -> one parquet table sorted by key columns, in bounded memory (an external sort).

`SortedTable.add(table)` buffers arrow tables; every `chunk_rows` rows the buffer is sorted and spilled to a
temporary parquet chunk. `batches()` merges the chunks back in key order, a batch at a time, holding one batch per
chunk. The order is the one pandas' `sort_values(keys, kind="stable", na_position="first")` gives on the whole
table: nulls first in every key, equal keys in arrival order, strings by code point. Rows that arrive already in
order (a time-sorted file, Phoenix's time-windowed pages) merge as whole slices, so the merge costs little.

`write_table_batches(path, schema, batches)` writes such a stream to one parquet file atomically.
"""

from __future__ import annotations

import heapq
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

CHUNK_ROWS = 50_000  # rows sorted in memory before a spill (a few tens of MB of spans)
MERGE_ROWS = 2_048  # rows of each spilled chunk held at a time while merging (a chunk per 50,000 rows added)
_SEQ = "__arrival"  # a global arrival number: the last key, so the sort is stable across chunks


class SortedTable:
    """An external sort of arrow tables by `keys`; see the module docstring. Use as a context manager (the
    spill directory is removed on exit). With `schema` None the tables keep the types they come with and the
    output has their union (`pa.unify_schemas`, permissive: a column that is int64 in one table and double in
    another is double, null and string is string), as pandas would infer for their concatenation."""

    def __init__(self, schema: Any, keys: list[str], *, chunk_rows: int | None = None,
                 spill_dir: str | Path | None = None):

        self.schema = schema
        self.keys = list(keys)
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.rows = 0
        self._dir = Path(tempfile.mkdtemp(prefix="sorted-table-", dir=spill_dir))
        self._buffer: list[Any] = []
        self._buffered = 0
        self._chunks: list[Path] = []

    def add(self, table: Any) -> None:
        """Add rows (a pyarrow Table with at least the schema's columns; cast to it)."""
        import pyarrow as pa

        if table.num_rows == 0:
            return
        if self.schema is not None:
            table = table.select(self.schema.names).cast(self.schema)
        else:
            table = table.replace_schema_metadata(None)
        table = table.append_column(_SEQ, pa.array(range(self.rows, self.rows + table.num_rows), pa.int64()))
        self.rows += table.num_rows
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.chunk_rows:
            self._spill()

    def _spill(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer, promote_options="permissive")
        self._buffer, self._buffered = [], 0
        table = table.take(_sort_indices(table, self.keys + [_SEQ]))
        path = self._dir / f"chunk-{len(self._chunks):05d}.parquet"
        pq.write_table(table, path, compression="lz4", row_group_size=MERGE_ROWS)
        self._chunks.append(path)

    def output_schema(self) -> Any:
        """The schema of `batches()`: the given one, or the union of what was added (None when nothing was)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._spill()
        if self.schema is None and self._chunks:
            schemas = [pq.read_schema(path).remove_metadata() for path in self._chunks]
            unified = pa.unify_schemas(schemas, promote_options="permissive")
            self.schema = unified.remove(unified.get_field_index(_SEQ))
        return self.schema

    def batches(self, batch_rows: int = 20_000) -> Iterator[Any]:
        """The rows in key order, as pyarrow Tables of about `batch_rows` rows with the output schema."""
        import pyarrow as pa

        schema = self.output_schema()
        if schema is None:
            return
        full = schema.append(pa.field(_SEQ, pa.int64()))
        key_schema = pa.schema([full.field(k) for k in self.keys + [_SEQ]])
        cursors = [_Cursor(path, key_schema, full) for path in self._chunks]
        heap = [(c.key(), n) for n, c in enumerate(cursors) if c.load()]
        heapq.heapify(heap)
        out: list[Any] = []
        size = 0
        while heap:
            _, n = heapq.heappop(heap)
            cursor = cursors[n]
            end = bisect_left(cursor.keys, heap[0][0], cursor.pos) if heap else len(cursor.keys)
            part = cursor.batch.slice(cursor.pos, end - cursor.pos)
            out.append(part)
            size += part.num_rows
            cursor.pos = end
            if cursor.pos < len(cursor.keys) or cursor.load():
                heapq.heappush(heap, (cursor.key(), n))
            if size >= batch_rows:
                yield pa.concat_tables(out).drop_columns([_SEQ])
                out, size = [], 0
        if out:
            yield pa.concat_tables(out).drop_columns([_SEQ])

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sort_indices(table: Any, keys: list[str]) -> Any:
    """Indices sorting `table` by `keys` ascending, nulls first in every key."""
    import pyarrow.compute as pc

    try:  # pyarrow >= 25: null placement per key
        options = pc.SortOptions(sort_keys=[(k, "ascending", "at_start") for k in keys])
    except (TypeError, ValueError):
        options = pc.SortOptions(sort_keys=[(k, "ascending") for k in keys], null_placement="at_start")
    return pc.sort_indices(table, options=options)


class _Cursor:
    """One spilled chunk, read a row group at a time, with each row's sort key as a comparable tuple."""

    def __init__(self, path: Path, key_schema: Any, schema: Any):
        import pyarrow.parquet as pq

        self._batches = pq.ParquetFile(path).iter_batches(batch_size=MERGE_ROWS)
        self._key_schema = key_schema
        self._schema = schema
        self.batch: Any = None
        self.keys: list[tuple] = []
        self.pos = 0

    def load(self) -> bool:
        """Read the next batch; False when the chunk is exhausted."""
        import pyarrow as pa

        batch = next(self._batches, None)
        if batch is None:
            return False
        self.batch = pa.Table.from_batches([batch]).select(self._schema.names).cast(self._schema)
        columns = []
        for field in self._key_schema:
            column = self.batch.column(field.name)
            if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
                column = column.cast(pa.int64())
            columns.append(column.to_pylist())
        # (0, None) sorts before (1, value): nulls first, as pandas' na_position="first"
        self.keys = [tuple(v for x in row for v in ((0, None) if x is None else (1, x))) for row in zip(*columns)]
        self.pos = 0
        return True

    def key(self) -> tuple:
        return self.keys[self.pos]


def write_table_batches(path: str | Path, schema: Any, batches: Iterable[Any]) -> Path:
    """Write pyarrow tables (in order) to one parquet file atomically (zstd), as `store.tables.write_table` would
    write their concatenation."""
    import pyarrow.parquet as pq

    from selfimprove.store.atomic import write_atomic

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_table(batch.cast(schema))

    return write_atomic(path, write)
