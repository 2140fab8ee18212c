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

from selfimprove.telemetry.raw import tree_frame

if TYPE_CHECKING:
    import pandas as pd

TRACE_IDS_PER_REQUEST = 100
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
            payload = source._call(lambda params=params: _get(source, path, params))
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


def _get(source: Any, path: str, params: dict[str, Any]) -> Any:
    response = source._http().get(path, params=params, headers={"accept": "application/json"},
                                  timeout=source.timeout)
    response.raise_for_status()
    return response.json()
