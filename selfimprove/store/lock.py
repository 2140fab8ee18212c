"""One lock per target: a second run of the same target fails fast with a clear message, or waits."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selfimprove.core.errors import LockHeld

_HELD: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth: `run` holds the lock across stages


@contextmanager
def target_lock(target_dir: Path, *, wait: bool = False, timeout: float | None = None) -> Iterator[Path]:
    """Hold `<target_dir>/.lock` for the duration. Without `wait`, fail at once if another process holds it.
    Re-entrant within one thread, so `selfimprove run` can hold it while each stage takes it again."""
    from filelock import FileLock, Timeout

    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / ".lock"
    key = (str(path.resolve()), threading.get_ident())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    holder = target_dir / ".lock.holder"
    lock = FileLock(str(path), timeout=(timeout if timeout is not None else -1) if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "another process"
        raise LockHeld(
            f"target '{target_dir.name}' is locked by {who} ({path})",
            hint="wait for that run to finish, or pass --wait to queue behind it",
        ) from None
    _HELD[key] = 1
    try:
        holder.write_text(f"pid {os.getpid()}")
        yield path
    finally:
        _HELD.pop(key, None)
        holder.unlink(missing_ok=True)
        lock.release()
