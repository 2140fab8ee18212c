"""Artifact references `{path, digest, rows, bytes}`: how every stage record names its inputs and outputs.

Parquet files are hashed by content (store/tables.py); JSON files by their parsed canonical form, so
re-indenting a file does not change its digest but changing a value does; anything else by its bytes. A table's
reference also carries `bytes`, the digest of the file's bytes: the content digest says "same data" across
writers and compressions, the bytes digest lets `verify` catch a flipped byte anywhere in the file (footer
statistics, embedded pandas metadata), not only in what the content digest decodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import digest
from selfimprove.core.errors import IntegrityError

# Table digests are costly (every row as canonical JSON): one process reading back a table it just wrote (a stage
# output becoming the next stage's input) reuses the digest while the file's identity is unchanged. The key holds
# the inode and ctime, which every write (and every mtime reset) changes, so a modified file is always re-hashed.
_TABLE_MEMO: dict[tuple, tuple[str, int]] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_digest(path: str | Path) -> tuple[str, int | None]:
    """(digest, rows) of one artifact; rows is None for anything that is not a table."""
    path = Path(path)
    if path.suffix == ".parquet":
        from selfimprove.store.tables import table_digest

        try:
            key = _stat_key(path)
            if key not in _TABLE_MEMO:
                if len(_TABLE_MEMO) > 256:
                    _TABLE_MEMO.clear()
                _TABLE_MEMO[key] = table_digest(path)
            return _TABLE_MEMO[key]
        except Exception as exc:  # a truncated or corrupted parquet file is an integrity failure
            raise IntegrityError(f"cannot read table {path}: {exc}", path=str(path)) from exc
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            return digest(json.loads(data)), None
        except ValueError as exc:
            raise IntegrityError(f"cannot parse JSON {path}: {exc}", path=str(path)) from exc
    return digest(data), None


def artifact_ref(root: Path, relpath: str) -> dict[str, Any]:
    """`{path, digest, rows}` for `root/relpath` (rows omitted for non-tables)."""
    d, rows = file_digest(root / relpath)
    ref: dict[str, Any] = {"path": relpath, "digest": d}
    if rows is not None:
        ref["rows"] = rows
        ref["bytes"] = digest((root / relpath).read_bytes())
    return ref


def ref_mismatch(root: Path, ref: dict[str, Any]) -> str | None:
    """Why the file `ref` names under `root` does not match it (missing, unreadable, other content or other
    bytes), or None when it matches."""
    path = root / ref["path"]
    if not path.is_file():
        return f"{path} is missing"
    if "bytes" in ref and digest(path.read_bytes()) != ref["bytes"]:
        return f"{path} does not match its recorded bytes digest"
    try:
        if file_digest(path)[0] != ref["digest"]:
            return f"{path} does not match its recorded digest"
    except IntegrityError as exc:
        return exc.message
    return None


def sorted_refs(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(refs, key=lambda r: r["path"])
