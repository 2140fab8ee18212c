"""Atomic writes: a temp file in the same folder, fsync, then `os.replace`. A reader sees the old file or the new."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import pretty_json


def write_atomic(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call `write(tmp_path)` then move the temp file over `path`. The temp file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Pretty, sorted JSON on disk. Digests of JSON artifacts are taken over their parsed content."""
    return write_text(path, pretty_json(obj))
