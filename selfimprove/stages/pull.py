"""`pull`: a target's spans and eval annotations from its telemetry source into a new run.

Writes `raw/spans.parquet` (rows by start_time, span_id) and `raw/annotations.parquet` (rows by span_id, name,
identifier, updated_at) with a stage record whose params hold the resolved window and the source. The window is
[since, until) on span start time, in UTC: a naive `--since` is read as UTC and the result says so; `until`
defaults to now, resolved to a concrete instant. Without `--since` a pull starts at the target's cursor (where
the last pull ended, minus an overlap deduplicated by span id). Nothing to pull is an error (exit 2) and leaves
no run behind. Pull always fetches: the server's state is not an input digest, so a pull stage is never reused.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import NothingNew, UsageError
from selfimprove.core.when import iso, parse_when
from selfimprove.store.cursor import advance_cursor, read_cursor, source_key
from selfimprove.telemetry.base import Progress
from selfimprove.telemetry.raw import TRACE_PREFIX

SOURCES = ("phoenix", "arize", "file")


class PullResult(BaseModel):
    """What a pull fetched and where it wrote it."""

    target: str
    run: str
    run_path: str
    source: dict[str, Any]
    since: str | None
    until: str
    since_from: str = Field(description="'flag', 'cursor' or 'none' (the beginning of time)")
    spans: int
    annotations: int
    annotation_names: dict[str, int] = Field(default_factory=dict)
    first_start_time: str | None = None
    last_start_time: str | None = None
    skipped: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    parent_build: str | None = None
    seconds: float = 0.0


def describe_source(source: Any) -> dict[str, Any]:
    """The identity of a source for the stage record and the cursor: never a secret, only names."""
    out: dict[str, Any] = {"name": getattr(source, "name", type(source).__name__)}
    for attr in ("endpoint", "project", "span_filter", "space_id", "api_key_env"):
        value = getattr(source, attr, None)
        if value:
            out[attr] = value
    path = getattr(source, "path", None)
    if path:
        out["path"] = str(Path(path).resolve())
    return out


def open_source(cfg: Any, name: str | None = None) -> Any:
    """The configured telemetry source (`name` overrides `telemetry.source`)."""
    name = name or cfg.telemetry.source
    if name not in SOURCES:
        raise UsageError(f"unknown source {name!r}", hint=f"use one of {', '.join(SOURCES)}")
    if name == "phoenix":
        from selfimprove.telemetry.phoenix import PhoenixSource

        px = cfg.telemetry.phoenix
        return PhoenixSource(px.endpoint, px.project, api_key_env=px.api_key_env, page_size=px.page_size,
                             timeout=px.timeout_s, span_filter=px.span_filter or None,
                             give_up_after=px.give_up_after_s)
    if name == "arize":
        from selfimprove.telemetry.arize import ArizeSource

        az = cfg.telemetry.arize
        if not az.space_id or not az.project:
            raise UsageError("the Arize source needs telemetry.arize.space_id and project",
                             hint="set them in the config or with --set telemetry.arize.space_id=…")
        return ArizeSource(az.space_id, az.project, az.api_key_env)
    from selfimprove.telemetry.files import FileSource

    if not cfg.telemetry.file.path:
        raise UsageError("the file source needs telemetry.file.path",
                         hint="--set telemetry.file.path=spans.parquet (or .jsonl)")
    return FileSource(cfg.telemetry.file.path)


class Puller:
    """The library twin of `selfimprove pull`: `Puller(root, target).pull(since=..., until=..., limit=...)`.

    `source` is a source name ("phoenix", "arize", "file") or any `TelemetrySource` object; `on_progress`
    receives `Progress(kind, done, total, requests)` as spans and annotations arrive (kind "waiting", with a
    `note`, while a server has not answered); `config` skips loading
    the config file (a `TargetConfig`)."""

    def __init__(self, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None, *,
                 source: Any = None, on_progress: Callable[[Progress], None] | None = None, wait: bool = False,
                 config: Any = None, clock: Callable[[], datetime] | None = None):
        from selfimprove.store.runs import Workspace

        if config is None:
            from selfimprove.config.load import load_target

            config = load_target(Path(root), target, overrides)
        self.cfg = config
        self.workspace = Workspace(root)
        self.source = source if source is not None and not isinstance(source, str) else open_source(config, source)
        self.on_progress = on_progress
        if on_progress is not None and hasattr(self.source, "on_wait") and self.source.on_wait is None:
            self.source.on_wait = lambda note: on_progress(
                Progress("waiting", 0, None, getattr(self.source, "requests", 0), note=note))
        self.wait = wait
        self.clock = clock or (lambda: datetime.now(UTC))

    def pull(self, since: str | datetime | None = None, until: str | datetime | None = None,
             limit: int | None = None) -> PullResult:
        with self.workspace.lock(self.cfg.target, wait=self.wait):
            return self._pull(since, until, limit)

    def _pull(self, since: Any, until: Any, limit: int | None) -> PullResult:
        started = time.monotonic()
        now = self.clock().astimezone(UTC)
        notes: list[str] = []
        desc = describe_source(self.source)
        key = source_key(desc)
        tdir = self.workspace.target_dir(self.cfg.target)
        cursor = read_cursor(tdir, key)
        end = parse_when(until, now, "--until") if until is not None else None
        until_at = end.at if end else now
        if end is not None and end.naive:
            notes.append(f"--until {until} has no timezone: read as UTC ({iso(until_at)})")
        exclude: set[str] = set()
        if since is not None:
            start = parse_when(since, now, "--since")
            since_at, since_from = start.at, "flag"
            if start.naive:
                notes.append(f"--since {since} has no timezone: read as UTC ({iso(since_at)})")
        elif cursor is not None:
            since_at, since_from = cursor.resume_at, "cursor"
            exclude = cursor.recent_span_ids
            notes.append(f"resuming from the cursor of run {cursor.run}: spans since {iso(since_at)} "
                         f"({cursor.overlap_s:g} s overlap, already-pulled spans skipped)")
        else:
            since_at, since_from = None, "none"
        if since_at is not None and since_at >= until_at:
            raise UsageError(f"empty time window: since {iso(since_at)} is not before until {iso(until_at)}")

        run, written, annotations, tree = self._write_run(desc, since_at, until_at, limit, since_from, cursor,
                                                          exclude, notes)
        skipped = {"already_pulled": written.excluded} if written.excluded else {}
        if limit is not None and written.fetched >= limit:
            notes.append(f"--limit {limit} reached: only the newest {limit} spans of the window were fetched")
        if tree is not None and len(tree):
            notes.append(f"{len(tree)} other spans of the pulled traces (parents, roots) kept in raw/tree.parquet, "
                         "with their annotations, for evals logged on them")
        notes += [n for n in getattr(self.source, "notes", []) if n not in notes]
        advance_cursor(tdir, key, cursor, [t for t, _ in written.recent], [i for _, i in written.recent],
                       run.run_id, desc)
        prod = run.manifest().get("parent_build") or {}
        rows, names = annotations
        return PullResult(
            target=self.cfg.target, run=run.run_id, run_path=str(run.path), source=desc, since=iso(since_at),
            until=iso(until_at), since_from=since_from, spans=written.rows, annotations=rows,
            annotation_names={str(k): int(v) for k, v in sorted(names.items())},
            first_start_time=iso(written.first_start) if written.first_start else None,
            last_start_time=iso(written.last_start) if written.last_start else None,
            skipped=skipped, notes=notes, parent_build=prod.get("name"),
            seconds=round(time.monotonic() - started, 3))

    def _write_run(self, desc: dict[str, Any], since_at: datetime | None, until_at: datetime, limit: int | None,
                   since_from: str, cursor: Any, exclude: set[str], notes: list[str]) -> tuple[Any, Any, Any, Any]:
        """Open the run and write both tables as the source sends them (store/raw_tables.py: bounded memory).
        The annotations are fetched in a worker thread while the spans table is hashed, so the client's work
        overlaps the server's. Nothing to pull, or any failure, removes the run."""
        from concurrent.futures import ThreadPoolExecutor

        from selfimprove.store.artifacts import file_digest
        from selfimprove.store.builds import production
        from selfimprove.store.cursor import OVERLAP_S
        from selfimprove.store.raw_tables import write_spans
        from selfimprove.telemetry.base import span_batches
        from selfimprove.telemetry.raw import SPAN_ORDER, arrow_schema

        prod = production(self.workspace.prompts_dir, self.cfg.target)
        parent = {"name": prod.name, "digest": prod.digest} if prod else None
        run = self.workspace.new_run(self.cfg.target, parent_build=parent)
        params = {"source": desc, "since": iso(since_at), "until": iso(until_at), "limit": limit,
                  "after_run": cursor.run if cursor and since_from == "cursor" else None}
        try:
            with run.stage("pull", params=params, force=True) as st:
                frames = span_batches(self.source, since_at, until_at, limit=limit, on_progress=self.on_progress)
                written = write_spans(st.path("raw/spans.parquet"), arrow_schema("spans"), SPAN_ORDER, frames,
                                      limit=limit, exclude=exclude, overlap_s=cursor.overlap_s if cursor else OVERLAP_S)
                notes += list(getattr(self.source, "notes", []))
                if written.rows == 0:
                    raise self._nothing_to_pull(desc, since_at, since_from, cursor, notes)
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-annotations") as pool:
                    pending = pool.submit(self._tree_and_annotations, st, written)
                    file_digest(st.path("raw/spans.parquet"))  # hashed now, reused at commit
                    tree, annotations = pending.result()
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)  # no half-written runs
            raise
        return run, written, annotations, tree

    def _tree_and_annotations(self, st: Any, written: Any) -> tuple[Any, Any]:
        """Write (the other spans of the pulled traces, or None when the source sends whole traces anyway; every
        annotation on the pulled spans and on those); returns (tree, (annotation rows, rows per name)). Evals
        logged on a chain parent or the trace root are annotations on spans outside the target's filter:
        without the tree they could not be joined."""
        from selfimprove.store.raw_tables import write_annotations
        from selfimprove.telemetry.base import annotation_batches
        from selfimprove.telemetry.raw import ANNOTATION_ORDER, arrow_schema

        ids = written.span_ids
        tree = None
        if hasattr(self.source, "fetch_tree"):  # only traces where a pulled span has something above it
            tree = self.source.fetch_tree(written.nested_trace_ids, known=ids)
            ids = ids + tree["span_id"].tolist()
            st.write_table("raw/tree.parquet", tree)
        frames = annotation_batches(self.source, ids, on_progress=self.on_progress)
        if hasattr(self.source, "fetch_trace_annotations"):  # annotations on whole traces: span id trace:<id>
            frames = _then(frames, lambda: self.source.fetch_trace_annotations(written.trace_ids))
        wanted = set(ids) | {TRACE_PREFIX + t for t in written.trace_ids}
        return tree, write_annotations(st.path("raw/annotations.parquet"), arrow_schema("annotations"),
                                       ANNOTATION_ORDER, frames, wanted)

    def _nothing_to_pull(self, desc: dict[str, Any], since_at: datetime | None, since_from: str, cursor: Any,
                         notes: list[str]) -> UsageError:
        where = f"project '{desc['project']}'" if desc.get("project") else (
            f"file {desc['path']}" if desc.get("path") else f"source {desc['name']}")
        when = f" since {iso(since_at)}" if since_at else ""
        detail = "; ".join(n for n in notes if not n.startswith("resuming")) or None
        if since_from == "cursor":
            return NothingNew(f"no new spans for {where}{when} (the last pull, run {cursor.run}, has the rest)",
                              hint="wait for new traffic, or pass --since to pull an earlier window again")
        hint = "check telemetry.phoenix.project and span_filter (--set telemetry.phoenix.project=NAME) or widen " \
               "--since" if desc["name"] == "phoenix" else "check the source settings or widen --since"
        return UsageError(f"no spans for {where}{when}" + (f" ({detail})" if detail else ""), hint=hint)


def _then(frames: Any, last: Callable[[], Any]) -> Any:
    yield from frames
    yield last()


def pull(root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
         since: str | datetime | None = None, until: str | datetime | None = None, limit: int | None = None,
         source: Any = None, wait: bool = False, on_progress: Callable[[Progress], None] | None = None
         ) -> PullResult:
    """Pull the target's spans and annotations into a new run; see the module docstring."""
    return Puller(root, target, overrides, source=source, on_progress=on_progress, wait=wait).pull(
        since=since, until=until, limit=limit)
