"""The code version that enters every stage key: the release plus a digest of the package's source files."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from selfimprove import __version__


@functools.cache
def code_version() -> str:
    """`<release>+<12 hex of the package source>`: any change to the code invalidates reused stages."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{h.hexdigest()[:12]}"
