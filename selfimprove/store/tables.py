"""Parquet tables and their content digests.

A table digest hashes *content*: the sorted column names, then every row's values in file order, each row as
canonical JSON. Compression, row groups, writer library and physical types do not change it; changing a value, a
column name or the row order does. NaN and infinities are tagged so they stay distinct from null.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import PREFIX, canonical_json
from selfimprove.store.atomic import write_atomic

_AS_IS = (str, int, bool, type(None))


def _plain(value: Any) -> Any:
    if type(value) in _AS_IS:  # the common case, first (digests are computed row by row)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return {"$naive": value.isoformat()}
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return {"$seconds": value.total_seconds()}
    if isinstance(value, (bytes, bytearray)):
        return {"$hex": bytes(value).hex()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def table_digest(path: str | Path) -> tuple[str, int]:
    """(`sha256:<hex>`, rows) of a parquet file's content, read in batches to bound memory."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = sorted(pf.schema_arrow.names)
    h = hashlib.sha256(b"table/1\n" + canonical_json(names) + b"\n")
    rows = 0
    for batch in pf.iter_batches(batch_size=4096, columns=names):
        columns = [batch.column(name).to_pylist() for name in names]
        for row in zip(*columns):
            h.update(canonical_json([_plain(v) for v in row]))
            h.update(b"\n")
        rows += batch.num_rows
    return PREFIX + h.hexdigest(), rows


def write_table(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame or pyarrow Table to parquet atomically (zstd), without the pandas index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
