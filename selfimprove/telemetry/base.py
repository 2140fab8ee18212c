"""The `TelemetrySource` contract every span source (Phoenix, Arize AX, files) implements, and its helpers.

Stdlib only: this module is safe to import from the CLI at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from selfimprove.core.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Progress:
    """One progress report: `done` rows of `kind` so far (`total` when known) after `requests` requests. Kind
    "waiting" says what the source is waiting for (`note`), e.g. a server that has not answered yet."""

    kind: Literal["spans", "annotations", "waiting"]
    done: int
    total: int | None
    requests: int
    note: str = ""


ProgressCallback = Callable[[Progress], None]


@runtime_checkable
class TelemetrySource(Protocol):
    """Where spans and their annotations come from. Both methods return frames in the raw schema of
    `selfimprove.telemetry.raw` (`SPAN_COLUMNS`, `ANNOTATION_COLUMNS`, with their dtypes).

    Invariants:
    - `since` is inclusive, `until` exclusive, both compared with the span's `start_time`; either may be None
      (unbounded). They must be timezone-aware: a naive datetime raises UsageError (the caller decides what a
      naive `--since` means, converts it and tells the user). Output times are UTC.
    - Every span in the window is returned, never silently truncated by a server page size; `limit` keeps the
      newest `limit` spans. Span ids are unique. Rows are ordered by (start_time, span_id).
    - Nothing in the window, an unknown project, unknown span ids: an empty frame and an entry in `notes`,
      never an exception. A systemic failure (server unreachable after retries, refused key) raises a
      SelfimproveError with a hint.
    - `notes` holds human-readable facts about the last fetch (cleared when `fetch_spans` starts).
    """

    name: str
    notes: list[str]

    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame: ...

    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame: ...


def require_utc(value: datetime | None, what: str) -> datetime | None:
    """`value` converted to UTC; None passes through; a naive datetime raises UsageError."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise UsageError(f"{what} must be a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise UsageError(f"{what} {value.isoformat()} has no timezone",
                         hint="pass a timezone-aware datetime (e.g. 2024-05-01T00:00:00+00:00)")
    return value.astimezone(UTC)


def check_window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """Both bounds in UTC, and `since < until` when both are given."""
    since, until = require_utc(since, "since"), require_utc(until, "until")
    if since is not None and until is not None and since >= until:
        raise UsageError(f"empty time window: since {since.isoformat()} is not before until {until.isoformat()}")
    return since, until


def report(on_progress: ProgressCallback | None, kind: Literal["spans", "annotations"], done: int,
           total: int | None, requests: int) -> None:
    if on_progress is not None:
        on_progress(Progress(kind, done, total, requests))


def slice_window(spans: pd.DataFrame, since: datetime | None, until: datetime | None,
                 limit: int | None) -> pd.DataFrame:
    """The rows of an in-memory raw spans frame (sorted by start time) in [since, until), the newest `limit` of
    them, re-indexed. Without bounds every row is kept; with one, rows without a start time are dropped."""
    keep = spans["start_time"].notna() if (since or until) else spans["span_id"].notna()
    if since is not None:
        keep &= spans["start_time"] >= since
    if until is not None:
        keep &= spans["start_time"] < until
    out = spans[keep]
    if limit is not None and len(out) > limit:
        out = out.iloc[len(out) - limit:]
    return out.reset_index(drop=True)


def span_batches(source: TelemetrySource, since: datetime | None, until: datetime | None, *, limit: int | None,
                 on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
    """A source's spans as raw frames, a batch at a time when it streams (`iter_spans`: batches in any order,
    each span id in one of them; the caller sorts and keeps the newest `limit`), else its one `fetch_spans`
    frame."""
    stream = getattr(source, "iter_spans", None)
    if stream is None:
        yield source.fetch_spans(since, until, limit=limit, on_progress=on_progress)
    else:
        yield from stream(since, until, limit=limit, on_progress=on_progress)


def annotation_batches(source: TelemetrySource, span_ids: Sequence[str], *,
                       on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
    """A source's annotations on `span_ids` as raw frames, a batch at a time when it streams (`iter_annotations`),
    else its one `fetch_annotations` frame."""
    stream = getattr(source, "iter_annotations", None)
    if stream is None:
        yield source.fetch_annotations(span_ids, on_progress=on_progress)
    else:
        yield from stream(span_ids, on_progress=on_progress)
