"""Spans and evals from Arize AX, through the `arize` SDK's export client (`pip install 'selfimprove[arize]'`).

`ArizeExportClient.export_model_to_df(space_id, model_id, environment=TRACING, start_time, end_time)` streams
one frame per window (Arrow Flight, no paging to do). Its tracing columns follow OpenInference with the
`attributes.` prefix (`context.span_id`, `attributes.llm.input_messages` as a list of dicts,
`attributes.llm.invocation_parameters` as a JSON string, `attributes.metadata` as a dict,
`attributes.llm.prompt_template.template|variables|version`, `attributes.llm.token_count.prompt`, ...);
`start_time`/`end_time` come back as naive timestamps converted from epoch nanoseconds, i.e. UTC. Evals are wide
columns `eval.<name>.label|score|explanation`, human annotations `annotation.<name>.label|score|updated_at|
updated_by`. The export window has coarse (second, documented as hourly) granularity, so rows are re-filtered
to [since, until) here. There is no eval metadata in the export: eval specs must come from the local registry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from selfimprove.core.errors import UsageError
from selfimprove.telemetry.base import ProgressCallback, check_window, report, slice_window
from selfimprove.telemetry.raw import annotations_from_columns, empty_annotations, normalize_phoenix_spans

if TYPE_CHECKING:
    import pandas as pd

INSTALL_HINT = "pip install 'selfimprove[arize]'"


class ArizeSource:
    """A `TelemetrySource` over one Arize AX tracing project (`model_id`) in a space.

    `api_key_env` names the environment variable with the Arize API key (never stored or logged). `client`
    replaces the SDK's `ArizeExportClient` with any object that has its `export_model_to_df` method (custom
    hosts, tests). Evals and annotations arrive with the spans; `fetch_annotations` reads them from the last
    `fetch_spans`.
    """

    name = "arize"

    def __init__(self, space_id: str, model_id: str, api_key_env: str = "ARIZE_API_KEY", *,
                 client: Any = None):
        self.space_id = space_id
        self.model_id = model_id
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
        client = self._get_client()
        frame = client.export_model_to_df(space_id=self.space_id, model_id=self.model_id,
                                          environment=_tracing_environment(self._client is not None),
                                          start_time=since, end_time=until)
        spans = normalize_arize_spans(frame)
        kept = slice_window(spans, since, until, limit)
        annotations = arize_annotations(frame)
        self._annotations = annotations[annotations["span_id"].isin(set(kept["span_id"]))].reset_index(drop=True)
        report(on_progress, "spans", len(kept), len(kept), 1)
        if len(kept) == 0:
            self.notes.append(f"no spans in Arize model {self.model_id!r} (space {self.space_id}) in the window")
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

    def _get_client(self) -> Any:
        if self._client is None:
            try:
                from arize.exporter import ArizeExportClient
            except ImportError as exc:
                raise UsageError(f"the Arize SDK is not installed ({exc.name or exc})", hint=INSTALL_HINT) from None
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UsageError(f"environment variable {self.api_key_env} is not set",
                                 hint="export your Arize API key under that name")
            self._client = ArizeExportClient(api_key=key)
        return self._client


def _tracing_environment(injected: bool) -> Any:
    try:
        from arize.utils.types import Environments
    except ImportError:
        if injected:  # a stand-in client without the SDK: it receives the enum's name
            return "TRACING"
        raise UsageError("the Arize SDK is not installed", hint=INSTALL_HINT) from None
    return Environments.TRACING


def normalize_arize_spans(frame: pd.DataFrame) -> pd.DataFrame:
    """An Arize tracing export frame -> the raw spans schema (naive export times are UTC)."""
    return normalize_phoenix_spans(frame, naive_is_utc=True)


def arize_annotations(frame: pd.DataFrame) -> pd.DataFrame:
    """The export's `eval.*` (LLM) and `annotation.*` (HUMAN) columns -> the raw annotations schema."""
    return annotations_from_columns(frame, naive_is_utc=True)
