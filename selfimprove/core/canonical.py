"""The canonical form of every hashed object, defined once.

`canonical_json` is sorted keys, compact separators, UTF-8, no NaN. `digest` prefixes the algorithm
("sha256:<hex>") so that a future change of canonical form or algorithm is detectable: changing anything in
this module changes every digest in every run folder, and the golden digests in tests/test_canonical.py.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any

PREFIX = "sha256:"


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            raise ValueError(f"naive datetime {obj!r} cannot be hashed; make it timezone-aware (UTC)")
        return obj.astimezone(_dt.UTC).isoformat()
    if isinstance(obj, _dt.date):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not canonically serialisable")


# One encoder, built once: json.dumps with non-default options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            default=_default)


def canonical_json(obj: Any) -> bytes:
    """Serialise `obj` to canonical JSON bytes (sorted keys, compact, UTF-8, finite floats only)."""
    return _ENCODER.encode(obj).encode("utf-8")


def digest(obj: Any) -> str:
    """`sha256:<hex>` of bytes as given, or of the canonical JSON of anything else."""
    data = obj if isinstance(obj, (bytes, bytearray, memoryview)) else canonical_json(obj)
    return PREFIX + hashlib.sha256(data).hexdigest()


def short(d: str, n: int = 12) -> str:
    """The first `n` hex characters of a digest, for ids and display."""
    return d.removeprefix(PREFIX)[:n]


def pretty_json(obj: Any) -> str:
    """Human-readable JSON for artifacts on disk (sorted, indented). Digests never hash this form."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=_default) + "\n"
