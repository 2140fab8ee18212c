"""Reading artifacts back: one place that turns a missing, truncated or invalid file into an IntegrityError
naming it (exit 4), never an "Unexpected error".

Every reader of a JSON artifact (manifest, stage record, checkpoint, candidate, report, build, ref) and of a
parquet table goes through here. Tables are read with pyarrow and converted to pandas *without* the embedded
pandas metadata (`ignore_metadata`), so what the product reads back is exactly what the table digest covers
(column names and values), not a byte of metadata the digest ignores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from selfimprove.core.errors import IntegrityError

M = TypeVar("M", bound=BaseModel)


def read_json(path: str | Path, what: str | None = None) -> Any:
    """The parsed JSON of an artifact; IntegrityError naming the file when it is missing or does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise IntegrityError(f"{what or 'artifact'} {path} is missing", path=str(path),
                             hint=_HINT) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"cannot read {path}: {exc}", path=str(path), hint=_HINT) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise IntegrityError(f"{path} is not valid JSON ({exc})", path=str(path), hint=_HINT) from exc


def read_model(path: str | Path, model: type[M], what: str | None = None, *, drop: tuple[str, ...] = ()) -> M:
    """An artifact validated as `model` (keys in `drop` removed first); IntegrityError naming the file when it is
    missing, unparsable or not a valid document of that kind."""
    data = read_json(path, what)
    if isinstance(data, dict):
        for key in drop:
            data.pop(key, None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise IntegrityError(f"{path} is not a valid {what or model.__name__} document: {where}: {first['msg']}",
                             path=str(path), hint=_HINT) from exc


def read_frame(path: str | Path, columns: list[str] | None = None, categorical: tuple[str, ...] = ()) -> Any:
    """A parquet table as a pandas DataFrame, read through what the table digest covers (no pandas metadata).
    The columns in `categorical` are read dictionary-encoded into pandas Categoricals: the same values, one copy
    of each distinct one (far less memory where values repeat, e.g. an eval spec in every annotation's
    metadata)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"table {path} is missing", path=str(path), hint=_HINT)
    try:
        names = pq.read_schema(path).names
        wanted = [n for n in categorical if n in names and (columns is None or n in columns)]
        table = pq.read_table(path, columns=columns, read_dictionary=wanted or None)
        return table.to_pandas(ignore_metadata=True)
    except Exception as exc:  # a truncated or corrupted parquet file (pyarrow raises several kinds)
        raise IntegrityError(f"cannot read table {path}: {exc}", path=str(path), hint=_HINT) from exc


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """A parquet table's rows as dicts straight from arrow (nulls as None, times as aware datetimes)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"table {path} is missing", path=str(path), hint=_HINT)
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # a truncated or corrupted parquet file (pyarrow raises several kinds)
        raise IntegrityError(f"cannot read table {path}: {exc}", path=str(path), hint=_HINT) from exc


ROW_BATCH = 10_000  # rows per batch of `read_row_batches` (a batch of row dicts costs ~2-3 KB a row)


def read_row_batches(path: str | Path, columns: list[str] | None = None,
                     batch_rows: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """A parquet table's rows as dicts straight from arrow, `batch_rows` (ROW_BATCH) at a time: bounded memory."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"table {path} is missing", path=str(path), hint=_HINT)
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows or ROW_BATCH, columns=columns):
            yield batch.to_pylist()
    except Exception as exc:  # a truncated or corrupted parquet file (pyarrow raises several kinds)
        raise IntegrityError(f"cannot read table {path}: {exc}", path=str(path), hint=_HINT) from exc


def read_frame_batches(path: str | Path, categorical: tuple[str, ...] = (),
                       batch_rows: int | None = None) -> Iterator[Any]:
    """A parquet table as pandas DataFrames of `batch_rows` (ROW_BATCH) rows, in file order, read as `read_frame`
    reads it (no pandas metadata; `categorical` columns dictionary-encoded): bounded memory."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"table {path} is missing", path=str(path), hint=_HINT)
    try:
        table = pq.ParquetFile(path, read_dictionary=[n for n in categorical if n in pq.read_schema(path).names])
        for batch in table.iter_batches(batch_size=batch_rows or ROW_BATCH):
            yield batch.to_pandas(ignore_metadata=True)
    except Exception as exc:  # a truncated or corrupted parquet file (pyarrow raises several kinds)
        raise IntegrityError(f"cannot read table {path}: {exc}", path=str(path), hint=_HINT) from exc


_HINT = "`selfimprove verify` checks every artifact; re-create the run's damaged stage (or restore the file)"
