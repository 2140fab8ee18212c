"""Online outcomes from pulled telemetry: each judged production call with the build that served it.

A call's build (and rollout arm) is what the app side recorded in the span's OpenInference metadata
(`selfimprove.build`, `selfimprove.rollout`, `selfimprove.arm`, `selfimprove.key`: see app/serving.py); its
outcome is the primary eval's annotation, joined onto the span the way snapshot joins (the target's `[join]`),
normalised (core.scores). Its cluster key is the rollout key the app recorded, else the metadata field named
`key_field`, else its trace. Read from every run of the target (pull's cursor gives each run only new traffic;
a span pulled twice counts once, its latest verdict wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from selfimprove.core.errors import UsageError
from selfimprove.core.rollout import ARM_KEY, BUILD_KEY, KEY_KEY, ROLLOUT_KEY


@dataclass(frozen=True)
class OnlineCall:
    span_id: str
    trace_id: str
    start_time: datetime | None
    build: str | None
    rollout: str | None
    arm: str | None
    key: str
    score: float | None  # the primary eval's normalised score; None when not judged (yet)


def primary_eval(cfg: Any, seen: list[str]) -> str:
    """The eval online evidence is about: `evals.primary`, else the only eval seen."""
    if cfg.evals.primary:
        return cfg.evals.primary
    if len(seen) == 1:
        return seen[0]
    raise UsageError(f"which eval is the online score? the pulled annotations hold {', '.join(seen) or 'none'}",
                     hint="set evals.primary in the target's config")


def run_calls(run_path: Any, cfg: Any, primary: str | None, key_field: str | None = None
              ) -> tuple[list[OnlineCall], list[str]]:
    """(the LLM calls of one pulled run with their primary score, the eval names seen in it)."""
    from selfimprove.core.scores import normalize
    from selfimprove.dataset.join import _metadata, is_llm_kind, join_run, read_tree
    from selfimprove.evals.recover import recover
    from selfimprove.store.documents import read_frame, read_rows

    spans_path = run_path / "raw/spans.parquet"
    if not spans_path.is_file():
        return [], []
    span_rows = [r for r in read_rows(spans_path) if is_llm_kind(r.get("span_kind"))]
    annotations = read_frame(run_path / "raw/annotations.parquet")
    recovered = recover(annotations, {}, None)
    joined = join_run([span_rows], read_tree(run_path), recovered.results, cfg.join)
    names = sorted(recovered.specs)
    name = primary if primary is not None else (names[0] if len(names) == 1 else None)
    spec = recovered.specs.get(name) if name else None
    out = []
    for row in span_rows:
        meta = _metadata(row.get("metadata"))
        span_id, trace_id = str(row["span_id"]), str(row.get("trace_id") or row["span_id"])
        result = (joined.results.get(span_id) or {}).get(name) if name else None
        score = normalize(result.score, spec) if result is not None and spec is not None else None
        key = meta.get(KEY_KEY) if meta.get(KEY_KEY) is not None else (meta.get(key_field) if key_field else None)
        out.append(OnlineCall(span_id=span_id, trace_id=trace_id, start_time=row.get("start_time"),
                              build=_text(meta.get(BUILD_KEY)), rollout=_text(meta.get(ROLLOUT_KEY)),
                              arm=_text(meta.get(ARM_KEY)), key=str(key) if key is not None else f"trace:{trace_id}",
                              score=score))
    return out, names


def target_calls(ws: Any, cfg: Any, key_field: str | None = None, since: datetime | None = None
                 ) -> tuple[list[OnlineCall], str]:
    """Every pulled LLM call of the target (once each, the latest run's reading wins), and the primary eval."""
    by_span: dict[str, OnlineCall] = {}
    seen: set[str] = set()
    runs = ws.runs(cfg.target)
    for run in runs:
        calls, names = run_calls(run.path, cfg, cfg.evals.primary, key_field)
        seen.update(names)
        for call in calls:
            recent = since is None or call.start_time is None or call.start_time >= since
            if recent and (call.score is not None or call.span_id not in by_span):
                by_span[call.span_id] = call
    if not runs:
        raise UsageError(f"no pulled runs of target '{cfg.target}'", hint="`selfimprove pull` first")
    primary = primary_eval(cfg, sorted(seen))
    return sorted(by_span.values(), key=lambda c: (c.start_time or datetime.min, c.span_id)), primary


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def policy_scores(run_path: Any, checkpoint: Any, policy_digest: str, primary: str
                  ) -> tuple[list[float], list[str]]:
    """(normalised primary scores, trace ids) of the run's samples that `policy_digest` produced: what production
    scored on the newly pulled, judged calls (the monitor's evidence)."""
    from selfimprove.core.scores import normalize
    from selfimprove.dataset.table import read_samples

    spec = next((e for e in checkpoint.evals if e.name == primary), None)
    if spec is None:
        return [], []
    scores, clusters = [], []
    for s in read_samples(run_path / "dataset.parquet"):
        result = s.evals.get(primary)
        value = normalize(result.score, spec) if result is not None and s.policy_digest == policy_digest else None
        if value is not None:
            scores.append(value)
            clusters.append(s.trace_id)
    return scores, clusters
