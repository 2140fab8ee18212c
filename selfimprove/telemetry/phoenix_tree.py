"""The span trees around pulled LLM spans, from Phoenix: every other span of their traces (chain and agent parents,
roots, LLM spans outside the window), structure only, so that evals logged on a parent or the root can be joined
to the LLM span under them (`selfimprove.core.join`).

GET /v1/projects/{project}/spans by trace id (Phoenix >= 13.9), 100 trace ids and 1,000 spans per request, at any
start time: a parent starts before its children, maybe before the pulled window. The REST rows carry every
attribute; only the structure is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from selfimprove.telemetry.raw import (
    TRACE_PREFIX,
    concat_annotations,
    normalize_phoenix_annotations,
    tree_frame,
)

if TYPE_CHECKING:
    import pandas as pd

TRACE_IDS_PER_REQUEST = 100
TRACE_ANNOTATION_CHUNK = 1000  # trace ids per trace-annotations request (the server's maximum)
SPANS_PER_PAGE = 1000  # the server's maximum


def fetch_tree(source: Any, trace_ids: Sequence[str], known: Sequence[str] = ()) -> pd.DataFrame:
    """The spans of `trace_ids` not in `known`, as a `TREE_COLUMNS` frame, through a `PhoenixSource`'s client
    (its retries, key and timeout)."""
    ids = sorted({str(t) for t in trace_ids})
    skip = set(map(str, known))
    rows: list[dict[str, Any]] = []
    path = f"v1/projects/{quote(source.project, safe='')}/spans"
    for i in range(0, len(ids), TRACE_IDS_PER_REQUEST):
        params: dict[str, Any] = {"trace_id": ids[i:i + TRACE_IDS_PER_REQUEST], "limit": SPANS_PER_PAGE}
        while True:
            payload = source._call(lambda timeout, params=params: _get(source, path, params, timeout),
                                   what="the traces' other spans")
            for span in payload.get("data") or []:
                context = span.get("context") or {}
                if context.get("span_id") in skip:
                    continue
                rows.append({"span_id": context.get("span_id"), "trace_id": context.get("trace_id"),
                             "parent_id": span.get("parent_id"), "name": span.get("name"),
                             "span_kind": span.get("span_kind"), "start_time": span.get("start_time")})
            cursor = payload.get("next_cursor")
            if not cursor or not payload.get("data"):
                break
            params = {**params, "cursor": cursor}
    return tree_frame(rows)


def fetch_trace_annotations(source: Any, trace_ids: Sequence[str]) -> pd.DataFrame:
    """Every annotation on the traces themselves (Phoenix trace annotations), as raw annotation rows whose span
    id is `trace:<trace id>`. GET /v1/projects/{project}/trace_annotations, 1,000 trace ids per request; traces
    unknown to the server have none."""
    ids = sorted({str(t) for t in trace_ids})
    return concat_annotations([_trace_annotations_chunk(source, ids[i:i + TRACE_ANNOTATION_CHUNK])
                               for i in range(0, len(ids), TRACE_ANNOTATION_CHUNK)])


def _trace_annotations_chunk(source: Any, ids: list[str]) -> pd.DataFrame:
    """One request (and its cursor pages) for up to 1,000 trace ids; split into requests of 100 when the URL is
    refused as too long (an older server or a proxy)."""
    import httpx

    from selfimprove.core.errors import SelfimproveError
    from selfimprove.telemetry.phoenix import _TOO_LONG, _annotations_frame

    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"trace_ids": ids, "limit": 10_000}
    path = f"v1/projects/{quote(source.project, safe='')}/trace_annotations"
    while True:
        try:
            payload = source._call(lambda timeout, params=params: _get(source, path, params, timeout),
                                   what="trace annotations")
        except SelfimproveError as exc:
            status = exc.__cause__.response.status_code if isinstance(exc.__cause__, httpx.HTTPStatusError) else 0
            if status in _TOO_LONG and len(ids) > TRACE_IDS_PER_REQUEST:
                return concat_annotations([_trace_annotations_chunk(source, ids[i:i + TRACE_IDS_PER_REQUEST])
                                           for i in range(0, len(ids), TRACE_IDS_PER_REQUEST)])
            if status == 404:  # none of these traces is known, so none has annotations
                break
            raise
        rows += [{**r, "span_id": TRACE_PREFIX + str(r.get("trace_id"))} for r in payload.get("data") or []]
        cursor = payload.get("next_cursor")
        if not cursor:
            break
        params = {**params, "cursor": cursor}
    return normalize_phoenix_annotations(_annotations_frame(rows))


def _get(source: Any, path: str, params: dict[str, Any], timeout: float) -> Any:
    response = source._http().get(path, params=params, headers={"accept": "application/json"}, timeout=timeout)
    response.raise_for_status()
    return response.json()
