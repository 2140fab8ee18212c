"""The incremental-pull cursor: `runs/<target>/cursor.json` remembers where the last pull of each source ended.

A pull without `--since` starts `overlap_s` seconds before the newest span start time seen so far, so spans that
reached the server late (ingestion lags the calls) are still picked up; the spans already pulled from that overlap
are recognised by their ids and skipped. The cursor only moves forward, and only after a pull committed its run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import digest, short
from selfimprove.store import atomic

SCHEMA = "selfimprove.cursor/1"
OVERLAP_S = 600.0


def source_key(description: dict[str, Any]) -> str:
    """A short stable key for one source (its name, endpoint, project, filter or path)."""
    return f"{description.get('name', 'source')}-{short(digest(description), 10)}"


@dataclass
class Cursor:
    last_start_time: datetime
    recent_span_ids: set[str] = field(default_factory=set)
    run: str | None = None
    overlap_s: float = OVERLAP_S

    @property
    def resume_at(self) -> datetime:
        return self.last_start_time - timedelta(seconds=self.overlap_s)


def cursor_path(target_dir: Path) -> Path:
    return target_dir / "cursor.json"


def read_cursor(target_dir: Path, key: str) -> Cursor | None:
    path = cursor_path(target_dir)
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("sources", {}).get(key)
    if not entry:
        return None
    return Cursor(datetime.fromisoformat(entry["last_start_time"]), set(entry.get("recent_span_ids", [])),
                  entry.get("run"), float(entry.get("overlap_s", OVERLAP_S)))


def advance_cursor(target_dir: Path, key: str, old: Cursor | None, start_times: Any, span_ids: Any,
                   run: str, description: dict[str, Any]) -> Cursor:
    """Move the cursor to the newest start time among the fetched spans (never backwards) and remember the ids
    fetched in the overlap before it. `start_times`/`span_ids` are the whole fetched window, skipped spans
    included. Writes the file atomically and returns the new cursor."""
    import pandas as pd

    times = pd.Series(start_times)
    newest = times.max() if len(times) and times.notna().any() else None
    last = newest.to_pydatetime() if newest is not None else None
    if old is not None and (last is None or old.last_start_time >= last):
        last = old.last_start_time
    if last is None:
        return old  # nothing with a start time was fetched: nothing to remember
    overlap = old.overlap_s if old else OVERLAP_S
    floor = last - timedelta(seconds=overlap)
    recent = {str(s) for s, t in zip(span_ids, times) if t is not None and not pd.isna(t) and t >= floor}
    if old is not None and old.last_start_time >= floor:
        recent |= old.recent_span_ids
    cursor = Cursor(last, recent, run, overlap)
    path = cursor_path(target_dir)
    data = json.loads(path.read_text()) if path.is_file() else {"schema": SCHEMA, "sources": {}}
    data.setdefault("sources", {})[key] = {
        "source": description, "last_start_time": last.isoformat(), "overlap_s": overlap, "run": run,
        "recent_span_ids": sorted(recent)}
    atomic.write_json(path, data)
    return cursor
