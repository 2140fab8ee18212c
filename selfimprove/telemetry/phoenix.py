"""Spans and span annotations from an Arize Phoenix server, through `phoenix.client` (REST).

Fast path: `get_spans_dataframe` with a select query of exactly the fields the raw schema needs (~7x faster than
the full frame). The endpoint answers one request of at most `limit` rows, newest first, with no cursor, so we
page by time window: the next page ends just after the oldest start time seen (`end_time` is exclusive), and
rows are de-duplicated by span id. When a whole page shares one start time, that instant is drained with a
growing limit before moving past it, so nothing is lost or truncated at a page boundary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.telemetry.base import ProgressCallback, check_window, report
from selfimprove.telemetry.raw import (
    concat_annotations,
    concat_spans,
    empty_annotations,
    normalize_phoenix_annotations,
    normalize_phoenix_spans,
)

if TYPE_CHECKING:
    import pandas as pd

# Every field the raw spans schema is built from (measured against Phoenix 20.26: these give all of it; the
# large `input.value`/`output.value` request/response copies are not needed and not fetched).
SELECT_FIELDS = ("span_id", "trace_id", "parent_id", "name", "span_kind", "start_time", "end_time",
                 "status_code", "status_message", "llm.input_messages", "llm.output_messages",
                 "llm.invocation_parameters", "llm.model_name", "llm.token_count.prompt",
                 "llm.token_count.completion", "llm.prompt_template", "metadata", "llm.tools")
ANNOTATION_CHUNK = 1000  # span ids per annotations call (the server's maximum)
_REQUEST_IDS = 100  # span ids per HTTP request inside the client
_RETRY_STATUS = {429, 502, 503, 504}
_T = TypeVar("_T")


class PhoenixSource:
    """A `TelemetrySource` reading one Phoenix project.

    `endpoint` is the server's base URL (a trailing `/v1` or `/v1/traces` is ignored). `api_key_env` names the
    environment variable holding the key (the value is never stored elsewhere or logged). `page_size` rows per
    request, `timeout` seconds per request, `retries` attempts for transient failures (connection refused or
    reset, timeouts, 429/502/503/504) with exponential backoff from `backoff` seconds. `span_filter` is a
    Phoenix span-query condition, e.g. "span_kind == 'LLM' and name == 'ChatCompletion'".
    """

    name = "phoenix"

    def __init__(self, endpoint: str, project: str, *, api_key_env: str | None = None, page_size: int = 5000,
                 timeout: float = 300, span_filter: str | None = None, retries: int = 4, backoff: float = 0.5):
        if page_size < 1:
            raise UsageError(f"page_size must be positive, got {page_size}")
        self.endpoint = _base_url(endpoint)
        self.project = project
        self.api_key_env = api_key_env
        self.page_size = page_size
        self.timeout = timeout
        self.span_filter = span_filter
        self.retries = max(1, retries)
        self.backoff = backoff
        self.notes: list[str] = []
        self.requests = 0
        self._client: Any = None

    # -- spans ------------------------------------------------------------------------------------------
    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        """All spans of the project whose start_time is in [since, until), newest `limit` if given."""
        since, until = check_window(since, until)
        self.notes = []
        self.requests = 0
        pages: list[pd.DataFrame] = []
        seen: set[str] = set()
        end = until
        size = self.page_size if limit is None else max(1, min(self.page_size, limit))
        while limit is None or len(seen) < limit:
            page = self._spans_page(since, end, size)
            fresh = page[~page["span_id"].isin(seen)]
            pages.append(fresh)
            seen.update(fresh["span_id"])
            report(on_progress, "spans", len(seen), None, self.requests)
            if len(page) < size:
                break  # the window [since, end) is exhausted
            oldest = page["start_time"].min()
            if (page["start_time"] == oldest).all():
                # more than a page at one instant: take that instant whole, then move strictly before it
                instant = self._drain_instant(oldest, seen, size)
                pages.append(instant)
                seen.update(instant["span_id"])
                report(on_progress, "spans", len(seen), None, self.requests)
                end = oldest.to_pydatetime()
            else:
                next_end = oldest.to_pydatetime() + timedelta(microseconds=1)
                if end is not None and next_end >= end:  # a server that ignores end_time would loop forever
                    raise SelfimproveError(f"paging spans from {self.endpoint} made no progress at {end}",
                                           hint="report this Phoenix version; lower --limit meanwhile")
                end = next_end
        spans = concat_spans(pages)
        if limit is not None and len(spans) > limit:
            spans = spans.iloc[len(spans) - limit:].reset_index(drop=True)  # keep the newest
        if len(spans) == 0:
            self.notes.append(self._why_empty(since, until))
        return spans

    def _spans_page(self, start: datetime | None, end: datetime | None, limit: int) -> pd.DataFrame:
        from phoenix.client.types.spans import SpanQuery

        query = SpanQuery()
        if self.span_filter:
            query = query.where(self.span_filter)
        query = query.select(*SELECT_FIELDS)
        df = self._call(lambda: self._get_client().spans.get_spans_dataframe(
            project_identifier=self.project, query=query, start_time=start, end_time=end, limit=limit,
            timeout=self.timeout))
        return normalize_phoenix_spans(df)

    def _drain_instant(self, instant: pd.Timestamp, seen: set[str], size: int) -> pd.DataFrame:
        start = instant.to_pydatetime()
        size *= 2
        while True:
            page = self._spans_page(start, start + timedelta(microseconds=1), size)
            if len(page) < size:
                return page[~page["span_id"].isin(seen)]
            size *= 2

    def _why_empty(self, since: datetime | None, until: datetime | None) -> str:
        import httpx

        window = f"[{since.isoformat() if since else '-inf'}, {until.isoformat() if until else 'now'})"
        try:
            self._call(lambda: self._get_client().projects.get(project_name=self.project))
        except SelfimproveError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 404:
                return f"project {self.project!r} not found on {self.endpoint}"
            raise
        where = f" matching {self.span_filter!r}" if self.span_filter else ""
        return f"no spans{where} in project {self.project!r} with start time in {window}"

    # -- annotations ------------------------------------------------------------------------------------
    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        """Every annotation (all names, notes included) on the given spans, fetched in chunks of 1,000 ids.
        Ids unknown to the server have no annotations; an unknown project gives an empty frame and a note."""
        ids = list(dict.fromkeys(str(s) for s in span_ids))
        frames: list[pd.DataFrame] = []
        done = 0
        for i in range(0, len(ids), ANNOTATION_CHUNK):
            chunk = ids[i:i + ANNOTATION_CHUNK]
            frame = self._annotations_chunk(chunk)
            if frame is None:  # unknown project: no chunk can have annotations
                break
            frames.append(frame)
            done += len(chunk)
            report(on_progress, "annotations", done, len(ids), self.requests)
        return concat_annotations(frames)

    def _annotations_chunk(self, chunk: list[str]) -> pd.DataFrame | None:
        import httpx

        try:
            df = self._call(lambda: self._get_client().spans.get_span_annotations_dataframe(
                span_ids=chunk, project_identifier=self.project, include_annotation_names=None,
                exclude_annotation_names=[], limit=1000, timeout=self.timeout))
        except SelfimproveError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 404):
                raise
            detail = _detail(cause.response)
            if "span_ids" not in detail:  # "Project ... not found"
                self.notes.append(f"project {self.project!r} not found on {self.endpoint}: no annotations")
                return None
            # The client sends 100 ids per request and one all-unknown request 404s the whole call:
            # retry per request-sized piece; a piece that still 404s has no annotations.
            if len(chunk) <= _REQUEST_IDS:
                return empty_annotations()
            parts = [self._annotations_chunk(chunk[j:j + _REQUEST_IDS])
                     for j in range(0, len(chunk), _REQUEST_IDS)]
            return concat_annotations([p for p in parts if p is not None])
        return normalize_phoenix_annotations(df)

    # -- plumbing ---------------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            from phoenix.client import Client

            api_key = None
            if self.api_key_env:
                api_key = os.environ.get(self.api_key_env)
                if not api_key:
                    raise UsageError(f"environment variable {self.api_key_env} is not set",
                                     hint="export the Phoenix API key under that name, or drop api_key_env")
            self._client = Client(base_url=self.endpoint, api_key=api_key)
        return self._client

    def _call(self, fn: Callable[[], _T]) -> _T:
        """`fn()` with retries for transient failures; other HTTP errors become SelfimproveError (the httpx
        error as `__cause__`)."""
        import httpx

        for attempt in range(1, self.retries + 1):
            self.requests += 1
            try:
                return fn()
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt == self.retries:
                    raise _transport_error(exc, self.endpoint, self.timeout, attempt) from exc
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status not in _RETRY_STATUS or attempt == self.retries:
                    raise _status_error(exc, self.endpoint, self.api_key_env) from exc
            time.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _base_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1"):
        url = url.removesuffix(suffix)
    return url


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]


def _transport_error(exc: Exception, endpoint: str, timeout: float, attempts: int) -> SelfimproveError:
    import httpx

    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return SelfimproveError(f"Phoenix at {endpoint} did not answer within {timeout:g}s ({attempts} attempts)",
                                hint="raise the timeout, or lower the page size")
    return SelfimproveError(f"cannot reach Phoenix at {endpoint} after {attempts} attempts: "
                            f"{type(exc).__name__}: {exc}", hint="is the server running? check the endpoint")


def _status_error(exc: Any, endpoint: str, api_key_env: str | None) -> SelfimproveError:
    status = exc.response.status_code
    if status in (401, 403):
        where = f"${api_key_env}" if api_key_env else "an API key (phoenix.api_key_env)"
        return SelfimproveError(f"Phoenix at {endpoint} refused the request ({status})",
                                hint=f"check {where}")
    return SelfimproveError(f"Phoenix at {endpoint} answered {status} to {exc.request.method} "
                            f"{exc.request.url.path}: {_detail(exc.response)}")
