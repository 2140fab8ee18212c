"""Paging Phoenix's span query without trusting the order of its rows.

Phoenix's span query with a select (the fast path, `phoenix/trace/dsl/query.py` in 20.26) applies its `limit`
without an ORDER BY: a full page is *some* `limit` spans of the window, not the newest ones. On sqlite they
happen to come newest first; on PostgreSQL they do not, and paging on "the oldest start time of a full page"
skipped spans without a word. So the pages are planned from the start times themselves:

1. `start_times`: a light query of start times only gives every start time in the window (a full answer is split
   at its median instant and each half asked again; a single instant is asked again with a doubled limit);
2. `plan_windows`: the window is cut between distinct instants into windows of at most `page_size` spans (an
   instant holding more is a window of its own), newest first, with their span counts;
3. each window is fetched whole with limit count + 1: an answer with more than count spans means spans arrived
   meanwhile, and that window is planned again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from selfimprove.core.errors import SelfimproveError

PROBE_LIMIT = 100_000  # start times per probe request (two small columns a row)
TICK = timedelta(microseconds=1)  # Phoenix keeps microseconds: the smallest step between two instants
MAX_REPLANS = 8  # a window that keeps growing (or a server that ignores the window) stops with an error


def start_times(probe: Callable[[datetime | None, datetime | None, int], list[datetime]],
                start: datetime | None, end: datetime | None, limit: int = PROBE_LIMIT) -> list[datetime]:
    """Every span start time in [start, end), from `probe(start, end, limit)` (some `limit` of them when there
    are more)."""
    times = probe(start, end, limit)
    if len(times) < limit:
        return times
    low, high = min(times), max(times)
    if low == high:  # one instant holds at least `limit` spans: ask for it whole, then for each side of it
        size = limit * 2
        while len(instant := probe(low, low + TICK, size)) >= size:
            size *= 2
        before = start_times(probe, start, low, limit) if start is None or start < low else []
        after = start_times(probe, low + TICK, end, limit) if end is None or low + TICK < end else []
        return after + instant + before
    middle = sorted(times)[len(times) // 2]
    if middle == low:
        middle = low + TICK
    return start_times(probe, middle, end, limit) + start_times(probe, start, middle, limit)


def plan_windows(times: list[datetime], page_size: int, limit: int | None = None
                 ) -> list[tuple[datetime, datetime, int]]:
    """[(start, end, spans)] covering `times`, newest first: each window [start, end) holds at most `page_size`
    spans unless it is one instant; with `limit`, only the windows holding the newest `limit` spans."""
    per_instant = sorted(Counter(times).items(), reverse=True)
    windows: list[tuple[datetime, datetime, int]] = []
    high: datetime | None = None
    low, count, taken = None, 0, 0
    for instant, n in per_instant:
        if limit is not None and taken >= limit:
            break
        if high is not None and count + n > page_size:
            windows.append((low, high + TICK, count))
            high, count = None, 0
        if high is None:
            high = instant
        low, count, taken = instant, count + n, taken + n
    if high is not None:
        windows.append((low, high + TICK, count))
    return windows  # type: ignore[return-value]  (low is set whenever high is)


def no_progress(endpoint: str, start: datetime, end: datetime) -> SelfimproveError:
    return SelfimproveError(f"paging spans from {endpoint} made no progress in [{start.isoformat()}, "
                            f"{end.isoformat()}): each answer held more spans than its window",
                            hint="report this Phoenix version; lower --limit meanwhile")
