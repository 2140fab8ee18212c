"""Spans and evals from Arize AX, through the `arize` SDK (`pip install 'selfimprove[arize]'`, arize 8.x).

`ArizeClient(api_key=...).spans.export_to_df(space_id=, project_name=, start_time=, end_time=)` streams the
project's spans over Arrow Flight in one call (no paging to do), and the SDK's own `OtelTracingDataTransformer`
turns the wire frame into Python values: OpenInference columns with the `attributes.` prefix
(`context.span_id`, `attributes.llm.input_messages` as a list of dicts, `attributes.llm.invocation_parameters` as
a JSON string, `attributes.metadata` and `attributes.llm.prompt_template.variables` as dicts,
`attributes.llm.token_count.prompt`, ...); `start_time`/`end_time` as naive timestamps converted from epoch
nanoseconds, i.e. UTC. Evals are wide columns `eval.<name>.label|score|explanation`, human annotations
`annotation.<name>.label|score|updated_at|updated_by`. The export window has coarse (second, documented as
hourly) granularity, so rows are re-filtered to [since, until) here. There is no eval metadata in the export:
eval specs come from the local registry. Hosts other than Arize's cloud: the SDK's own settings
(`ARIZE_FLIGHT_HOST`, `ARIZE_FLIGHT_PORT`, `ARIZE_FLIGHT_SCHEME`, or a region) apply.

arize 7.x's `arize.exporter.ArizeExportClient.export_model_to_df(model_id=...)` is gone in 8.x; a 7.x install is
reported as an old SDK (with the install hint), never half-used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from selfimprove.core.errors import UsageError
from selfimprove.telemetry.base import ProgressCallback, check_window, report, slice_window
from selfimprove.telemetry.raw import (
    TRACE_PREFIX,
    empty_annotations,
    normalize_phoenix_spans,
)
from selfimprove.telemetry.wide_evals import annotations_from_columns

if TYPE_CHECKING:
    import pandas as pd

INSTALL_HINT = "pip install 'selfimprove[arize]'  (arize>=8.61,<9)"


class ArizeSource:
    """A `TelemetrySource` over one Arize AX tracing project in a space.

    `api_key_env` names the environment variable with the Arize API key (never stored or logged). `client` is an
    `arize.ArizeClient` built by the caller (custom hosts, tests); without one, it is built from the key on first
    use. Evals and annotations arrive with the spans; `fetch_annotations` reads them from the last `fetch_spans`.
    """

    name = "arize"

    def __init__(self, space_id: str, project: str, api_key_env: str = "ARIZE_API_KEY", *, client: Any = None):
        self.space_id = space_id
        self.project = project
        self.api_key_env = api_key_env
        self.notes: list[str] = []
        self._client = client
        self._annotations: pd.DataFrame | None = None

    def fetch_spans(self, since: datetime | None, until: datetime | None, *, limit: int | None = None,
                    on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        since, until = check_window(since, until)
        if since is None:
            raise UsageError("an Arize export needs a start time", hint="pass --since")
        until = until or datetime.now(UTC)
        self.notes = []
        frame = self._get_client().spans.export_to_df(space_id=self.space_id, project_name=self.project,
                                                      start_time=since, end_time=until)
        spans = normalize_arize_spans(frame)
        kept = slice_window(spans, since, until, limit)
        sessions = sorted({c.split(".")[1] for c in frame.columns if c.startswith("session_eval.") and c.count(".") > 1})
        if sessions:  # said, not dropped silently
            self.notes.append("session evals are not used (they judge a whole session, not one call): "
                              + ", ".join(sessions))
        annotations = arize_annotations(frame)
        keys = set(kept["span_id"]) | {TRACE_PREFIX + str(t) for t in kept["trace_id"].dropna()}
        self._annotations = annotations[annotations["span_id"].isin(keys)].reset_index(drop=True)
        report(on_progress, "spans", len(kept), len(kept), 1)
        if len(kept) == 0:
            self.notes.append(f"no spans in Arize project {self.project!r} (space {self.space_id}) in the window")
        return kept

    def fetch_annotations(self, span_ids: Sequence[str], *,
                          on_progress: ProgressCallback | None = None) -> pd.DataFrame:
        if self._annotations is None:
            self.notes.append("Arize annotations arrive with the spans: call fetch_spans first")
            return empty_annotations()
        ids = set(map(str, span_ids))
        missing = ids - set(self._annotations["span_id"])
        out = self._annotations[self._annotations["span_id"].isin(ids)].reset_index(drop=True)
        report(on_progress, "annotations", len(ids) - len(missing), len(ids), 0)
        return out

    def fetch_trace_annotations(self, trace_ids: Sequence[str]) -> pd.DataFrame:
        """The export's trace evals (`trace_eval.*`) of these traces, under the span id `trace:<trace id>`."""
        if self._annotations is None:
            return empty_annotations()
        keys = {TRACE_PREFIX + str(t) for t in trace_ids}
        return self._annotations[self._annotations["span_id"].isin(keys)].reset_index(drop=True)

    def _get_client(self) -> Any:
        if self._client is None:
            client_class = arize_client_class()
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UsageError(f"environment variable {self.api_key_env} is not set",
                                 hint="export your Arize API key under that name")
            self._client = client_class(api_key=key)
        return self._client


def arize_client_class() -> Any:
    """`arize.ArizeClient`, or a UsageError naming what is installed instead."""
    try:
        import arize
    except ImportError as exc:
        raise UsageError(f"the Arize SDK is not installed ({exc.name or exc})", hint=INSTALL_HINT) from None
    client_class = getattr(arize, "ArizeClient", None)
    if client_class is None:
        version = getattr(arize, "__version__", "unknown")
        raise UsageError(f"the installed Arize SDK ({version}) has no ArizeClient: selfimprove needs arize 8",
                         hint=INSTALL_HINT)
    return client_class


def normalize_arize_spans(frame: pd.DataFrame) -> pd.DataFrame:
    """An Arize tracing export frame -> the raw spans schema (naive export times are UTC)."""
    return normalize_phoenix_spans(frame, naive_is_utc=True)


def arize_annotations(frame: pd.DataFrame) -> pd.DataFrame:
    """The export's `eval.*` (LLM) and `annotation.*` (HUMAN) columns -> the raw annotations schema."""
    return annotations_from_columns(frame, naive_is_utc=True)
