"""Spans and span annotations from an Arize Phoenix server, through `phoenix.client` (REST).

Fast path: `get_spans_dataframe` with a select query of exactly the fields the raw schema needs (~7x faster than
the full frame). The endpoint answers one request of at most `limit` rows with no cursor and, for a select
query, in no defined order (on PostgreSQL not the newest first), so the pages are time windows planned from the
spans' start times (`phoenix_paging`): each window holds at most `page_size` spans and is fetched whole, and rows
are de-duplicated by span id.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.store.raw_tables import id_mask
from selfimprove.telemetry.base import ProgressCallback, check_window, report
from selfimprove.telemetry.phoenix_errors import failure_text, response_detail, status_error, transport_error
from selfimprove.telemetry.prefetch import ChunkPrefetcher
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
ANNOTATION_CHUNK = 1000  # span ids per annotations request (the server's maximum)
_ANNOTATIONS_PER_PAGE = 10_000  # annotations per response page (the server's maximum)
_REQUEST_IDS = 100  # span ids per request when a long URL is refused (what phoenix.client itself sends)
_TOO_LONG = {400, 414, 422, 431}  # URL too long, or more span ids than the server takes
_RETRY_STATUS = {429, 502, 503, 504}
_T = TypeVar("_T")


class PhoenixSource:
    """A `TelemetrySource` reading one Phoenix project.

    `endpoint` is the server's base URL (a trailing `/v1` or `/v1/traces` is ignored). `api_key_env` names the
    environment variable holding the key (the value is never stored elsewhere or logged). `page_size` rows per
    request, `timeout` seconds per request, `retries` attempts for transient failures (connection refused or
    reset, timeouts, 429/502/503/504) with exponential backoff from `backoff` seconds. `give_up_after` bounds
    the whole wait for one answer, retries included: a hung server is given up on with a clear error after at
    most that many seconds (each attempt's timeout is cut to what is left). `on_wait(message)` is told when
    a request is sent and when an attempt failed and is retried, so a caller can show what it is waiting for. `span_filter` is a
    Phoenix span-query condition, e.g. "span_kind == 'LLM' and name == 'ChatCompletion'".
    """

    name = "phoenix"

    def __init__(self, endpoint: str, project: str, *, api_key_env: str | None = None, page_size: int = 5000,
                 timeout: float = 120, span_filter: str | None = None, retries: int = 4, backoff: float = 0.5,
                 give_up_after: float = 300, on_wait: Callable[[str], None] | None = None):
        if page_size < 1:
            raise UsageError(f"page_size must be positive, got {page_size}")
        self.endpoint = _base_url(endpoint)
        self.project = project
        self.api_key_env = api_key_env
        self.page_size = page_size
        self.timeout = timeout
        self.give_up_after = give_up_after
        self.on_wait = on_wait
        self.span_filter = span_filter
        self.retries = max(1, retries)
        self.backoff = backoff
        self.notes: list[str] = []
        self.requests = 0
        self._client: Any = None
        self._lock = threading.Lock()
        # annotations of the spans seen so far, fetched while the spans are parsed and written
        self._prefetch = ChunkPrefetcher(self._annotations_chunk, ANNOTATION_CHUNK)

    # -- spans ------------------------------------------------------------------------------------------
    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        """All spans of the project whose start_time is in [since, until), newest `limit` if given."""
        spans = concat_spans(list(self.iter_spans(since, until, limit=limit, on_progress=on_progress)))
        if limit is not None and len(spans) > limit:
            spans = spans.iloc[len(spans) - limit:].reset_index(drop=True)  # keep the newest
        return spans

    def iter_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                   on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
        """The spans of [since, until) a window at a time, newest first, each span once; with `limit`, at least
        the newest `limit` spans (the caller keeps the newest `limit`). The windows are planned from the start
        times (telemetry/phoenix_paging.py: Phoenix's select query limits without ordering)."""
        from selfimprove.telemetry.phoenix_paging import plan_windows, start_times

        since, until = check_window(since, until)
        self.notes = []
        self.requests = 0
        self._prefetch.cancel()
        seen: set[str] = set()
        times = start_times(self._start_times_page, since, until)
        total = len(times) if limit is None else min(limit, len(times))
        windows = plan_windows(times, self.page_size, limit)
        del times
        for start, end, count in windows:
            for page in self._window(start, end, count, seen, 0):
                seen.update(page["span_id"])
                report(on_progress, "spans", len(seen), max(total, len(seen)), self.requests)
                yield page
        if not seen:
            self.notes.append(self._why_empty(since, until))

    def _window(self, start: datetime, end: datetime, count: int, seen: set[str], replans: int
                ) -> Iterator[pd.DataFrame]:
        """The spans of one planned window (`count` of them when planned); planned again if it grew."""
        from selfimprove.telemetry.phoenix_paging import MAX_REPLANS, no_progress, plan_windows, start_times

        page = self._spans_page(start, end, count + 1)
        if len(page) <= count:
            fresh = page[~id_mask(page["span_id"], seen)]
            if len(fresh):
                yield fresh
            return
        if replans >= MAX_REPLANS:
            raise no_progress(self.endpoint, start, end)
        for sub_start, sub_end, sub_count in plan_windows(start_times(self._start_times_page, start, end),
                                                          self.page_size):
            yield from self._window(sub_start, sub_end, sub_count, seen, replans + 1)

    def _start_times_page(self, start: datetime | None, end: datetime | None, limit: int) -> list[datetime]:
        """Some `limit` span start times of [start, end) (all of them when fewer), as UTC datetimes."""
        from phoenix.client.types.spans import SpanQuery

        from selfimprove.telemetry.raw import utc_times

        query = SpanQuery()
        if self.span_filter:
            query = query.where(self.span_filter)
        df = self._call(lambda timeout: self._get_client().spans.get_spans_dataframe(
            project_identifier=self.project, query=query.select("start_time"), start_time=start, end_time=end,
            limit=limit, timeout=timeout), what="spans")
        if df is None or len(df) == 0 or "start_time" not in df.columns:
            return []
        return [t.to_pydatetime() for t in utc_times(df["start_time"], "start_time").dropna()]

    def _spans_page(self, start: datetime | None, end: datetime | None, limit: int) -> pd.DataFrame:
        from phoenix.client.types.spans import SpanQuery

        query = SpanQuery()
        if self.span_filter:
            query = query.where(self.span_filter)
        query = query.select(*SELECT_FIELDS)
        df = self._call(lambda timeout: self._get_client().spans.get_spans_dataframe(
            project_identifier=self.project, query=query, start_time=start, end_time=end, limit=limit,
            timeout=timeout), what="spans")
        self._prefetch.add(_raw_span_ids(df))
        return normalize_phoenix_spans(df)

    def _why_empty(self, since: datetime | None, until: datetime | None) -> str:
        import httpx

        window = f"[{since.isoformat() if since else '-inf'}, {until.isoformat() if until else 'now'})"
        try:
            self._call(lambda timeout: self._get_client().projects.get(project_name=self.project), what="project")
        except SelfimproveError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 404:
                return f"project {self.project!r} not found on {self.endpoint}"
            raise
        where = f" matching {self.span_filter!r}" if self.span_filter else ""
        return f"no spans{where} in project {self.project!r} with start time in {window}"

    # -- trees ------------------------------------------------------------------------------------------
    def fetch_tree(self, trace_ids: Sequence[str], known: Sequence[str] = ()) -> pd.DataFrame:
        """The other spans of `trace_ids` (parents, roots, LLM spans outside the window) as structure; see
        `selfimprove.telemetry.phoenix_tree`."""
        from selfimprove.telemetry.phoenix_tree import fetch_tree

        return fetch_tree(self, trace_ids, known)

    def fetch_trace_annotations(self, trace_ids: Sequence[str]) -> pd.DataFrame:
        """Annotations on the traces themselves, under the span id `trace:<trace id>`."""
        from selfimprove.telemetry.phoenix_tree import fetch_trace_annotations

        return fetch_trace_annotations(self, trace_ids)

    # -- annotations ------------------------------------------------------------------------------------
    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        """Every annotation (all names, notes included) on the given spans, as one frame; see `iter_annotations`."""
        return concat_annotations(list(self.iter_annotations(span_ids, on_progress=on_progress)))

    def iter_annotations(self, span_ids: Sequence[str], *,
                         on_progress: ProgressCallback | None = None) -> Iterator[pd.DataFrame]:
        """Every annotation (all names, notes included) on the given spans, a frame per chunk of 1,000 ids in
        the ids' order (each sorted in the raw order). Ids unknown to the server have no annotations; an unknown
        project gives no frame and a note. Chunks of ids seen by `iter_spans` were already requested in the
        background; only the rest is fetched here."""
        ids = list(dict.fromkeys(str(s) for s in span_ids))
        wanted = set(ids)
        done = 0
        with closing(self._prefetch.chunks(ids)) as chunks:
            for frame, covered in chunks:
                if frame is None:  # unknown project: no chunk can have annotations
                    return
                done += covered
                report(on_progress, "annotations", done, len(ids), self.requests)
                keep = id_mask(frame["span_id"], wanted)  # prefetched chunks also hold spans not asked for
                if keep.any():
                    yield frame if keep.all() else frame[keep].reset_index(drop=True)

    def _annotations_chunk(self, chunk: list[str]) -> pd.DataFrame | None:
        """The annotations of up to 1,000 span ids; None when the project is unknown."""
        import httpx

        try:
            rows = self._annotation_rows(chunk)
        except SelfimproveError as exc:
            cause = exc.__cause__
            if not isinstance(cause, httpx.HTTPStatusError):
                raise
            status = cause.response.status_code
            if status in _TOO_LONG and len(chunk) > _REQUEST_IDS:  # an older server or a proxy's URL limit
                parts = [self._annotations_chunk(chunk[j:j + _REQUEST_IDS])
                         for j in range(0, len(chunk), _REQUEST_IDS)]
                return concat_annotations([p for p in parts if p is not None])
            if status != 404:
                raise
            if "span_ids" not in response_detail(cause.response):  # "Project ... not found"
                self.notes.append(f"project {self.project!r} not found on {self.endpoint}: no annotations")
                return None
            return empty_annotations()  # none of these ids is a span of the project
        return normalize_phoenix_annotations(_annotations_frame(rows))

    def _annotation_rows(self, chunk: list[str]) -> list[dict[str, Any]]:
        """GET /v1/projects/{project}/span_annotations for a whole chunk (every name, notes included), following
        the cursor. One request per 1,000 ids: `get_span_annotations_dataframe` sends 100 ids per request, and
        the server's per-request cost made that 10x the requests and ~1.7x the time on 20,000 spans."""
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"span_ids": chunk, "limit": _ANNOTATIONS_PER_PAGE}
        path = f"v1/projects/{quote(self.project, safe='')}/span_annotations"
        while True:
            def get(timeout: float, params: dict[str, Any] = params) -> Any:
                response = self._http().get(path, params=params, headers={"accept": "application/json"},
                                            timeout=timeout)
                response.raise_for_status()
                return response.json()

            payload = self._call(get, what="annotations")
            rows += payload.get("data") or []
            cursor = payload.get("next_cursor")
            if not cursor:
                return rows
            params = {**params, "cursor": cursor}

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

    def _http(self) -> Any:
        """The client's own httpx client (its base URL, auth and environment headers), for the one endpoint
        called directly."""
        return self._get_client()._client

    def _call(self, fn: Callable[[float], _T], what: str = "a request") -> _T:
        """`fn(timeout)` with retries for transient failures, all within `give_up_after` seconds; other HTTP
        errors become SelfimproveError (the httpx error as `__cause__`)."""
        import httpx

        started = time.monotonic()
        for attempt in range(1, self.retries + 1):
            with self._lock:  # the annotation prefetch calls from its own thread
                self.requests += 1
            left = self.give_up_after - (time.monotonic() - started)
            timeout = max(0.05, min(self.timeout, left))
            self._tell(f"waiting for {what} from Phoenix at {self.endpoint}"
                       + (f" (attempt {attempt} of {self.retries})" if attempt > 1 else ""))
            try:
                return fn(timeout)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                waited = time.monotonic() - started
                if attempt == self.retries or waited + self.backoff * 2 ** (attempt - 1) >= self.give_up_after:
                    raise transport_error(exc, self.endpoint, waited, attempt, self.give_up_after) from exc
                self._tell(f"Phoenix at {self.endpoint}: {failure_text(exc)} after {waited:.0f} s; retrying "
                           f"(gives up after {self.give_up_after:g} s)")
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status not in _RETRY_STATUS or attempt == self.retries:
                    raise status_error(exc, self.endpoint, self.api_key_env) from exc
            time.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _tell(self, message: str) -> None:
        if self.on_wait is not None:
            self.on_wait(message)


def _base_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1"):
        url = url.removesuffix(suffix)
    return url


def _raw_span_ids(df: pd.DataFrame) -> list[str]:
    """The span ids of a frame as Phoenix returned it (a column, or the index of a select-query frame)."""
    if df is None or len(df) == 0:
        return []
    for name in ("context.span_id", "span_id"):
        if name in df.columns:
            return [str(v) for v in df[name].dropna()]
    if df.index.name in ("context.span_id", "span_id"):
        return [str(v) for v in df.index.dropna()]
    return []


def _annotations_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """REST annotation rows in the shape of `get_span_annotations_dataframe` (nested `result` flattened to
    `result.*`; servers before `result` had label/score/explanation at the top level)."""
    import pandas as pd

    def result(row: dict[str, Any], key: str) -> Any:
        nested = row.get("result")
        return nested.get(key) if isinstance(nested, dict) else row.get(key)

    return pd.DataFrame({
        "span_id": [r.get("span_id") for r in rows], "annotation_name": [r.get("name") for r in rows],
        "annotator_kind": [r.get("annotator_kind") for r in rows],
        "result.label": [result(r, "label") for r in rows], "result.score": [result(r, "score") for r in rows],
        "result.explanation": [result(r, "explanation") for r in rows],
        "metadata": [r.get("metadata") for r in rows], "identifier": [r.get("identifier") for r in rows],
        "created_at": [r.get("created_at") for r in rows], "updated_at": [r.get("updated_at") for r in rows]})
