"""Span annotations -> each span's latest verdict per eval, and each eval's EvalSpec.

- The latest annotation wins per (span, eval): by `updated_at`, then `created_at`, then `identifier`.
- Human annotations are their own eval, named `human.<name>`, never mixed with an LLM judge of the same name.
- Phoenix notes (name `note`) are not evals and are skipped.
- The spec of an eval comes, in order, from the annotation metadata key `selfimprove.eval_spec` (written by the
  EvalInstrumentor: the latest annotation carrying one wins, and several distinct specs are reported), a local
  registry (`<root>/evals/<name>.json`, an EvalSpec as JSON), or is inferred from what the annotations show
  (kind, label -> score choices when consistent, the judge model and direction phoenix-evals records).
Pure except `read_registry`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfimprove.core.records import EvalResult, EvalSpec

SPEC_KEY = "selfimprove.eval_spec"
NOTE = "note"
_KINDS = {"LLM": "llm", "CODE": "code", "HUMAN": "human"}


@dataclass
class Recovered:
    results: dict[str, dict[str, EvalResult]]  # span id -> eval name -> latest result
    specs: dict[str, EvalSpec]  # eval name -> spec
    spec_sources: dict[str, str]  # eval name -> "annotation" | "registry" | "inferred"
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def eval_name(name: str, annotator_kind: str | None) -> str:
    return f"human.{name}" if str(annotator_kind or "").upper() == "HUMAN" else name


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        type(value).__name__ in ("NAType", "NaTType")


def _val(value: Any) -> Any:
    return None if _missing(value) else value


def _metadata(value: Any) -> dict[str, Any]:
    value = _val(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _order_key(row: dict[str, Any]) -> tuple:
    def t(v: Any) -> str:
        v = _val(v)
        return "" if v is None else (v.isoformat() if hasattr(v, "isoformat") else str(v))

    return (t(row.get("updated_at")), t(row.get("created_at")), str(_val(row.get("identifier")) or ""))


def read_registry(root: str | Path) -> dict[str, EvalSpec]:
    """EvalSpecs saved under `<root>/evals/*.json` (the instrumentor's local registry); bad files are skipped."""
    out: dict[str, EvalSpec] = {}
    folder = Path(root) / "evals"
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            data.pop("schema", None)
            spec = EvalSpec.model_validate(data)
        except (ValueError, ValidationError):
            continue
        out[spec.name] = spec
    return out


def recover(rows: list[dict[str, Any]], registry: dict[str, EvalSpec] | None = None,
            include: list[str] | None = None) -> Recovered:
    """Join raw annotation rows (the columns of `raw.ANNOTATION_COLUMNS`). `include` keeps only those evals
    (by their eval name, e.g. `correctness` or `human.helpful`)."""
    registry = registry or {}
    counts = {"annotations": len(rows), "annotations.notes": 0, "annotations.superseded": 0,
              "annotations.excluded": 0}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    spec_rows: dict[str, list[tuple[tuple, dict[str, Any]]]] = {}
    observed: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=_order_key):
        name = str(row.get("name"))
        if name == NOTE:
            counts["annotations.notes"] += 1
            continue
        ename = eval_name(name, _val(row.get("annotator_kind")))
        if include and ename not in include:
            counts["annotations.excluded"] += 1
            continue
        key = (str(row.get("span_id")), ename)
        if key in latest:
            counts["annotations.superseded"] += 1
        latest[key] = row  # rows are in time order: the last one wins
        meta = _metadata(row.get("metadata"))
        observed.setdefault(ename, []).append({**row, "metadata": meta})
        if isinstance(meta.get(SPEC_KEY), dict):
            spec_rows.setdefault(ename, []).append((_order_key(row), meta[SPEC_KEY]))
    results: dict[str, dict[str, EvalResult]] = {}
    for (span_id, ename), row in latest.items():
        score = _val(row.get("score"))
        results.setdefault(span_id, {})[ename] = EvalResult(
            label=None if _val(row.get("label")) is None else str(row["label"]),
            score=None if score is None else float(score),
            explanation=_val(row.get("explanation")), annotator_kind=_val(row.get("annotator_kind")))
    specs, sources, notes = {}, {}, []
    for ename in sorted(observed):
        spec, source, note = _spec_for(ename, spec_rows.get(ename, []), registry, observed[ename])
        specs[ename], sources[ename] = spec, source
        notes += note
    return Recovered(results, specs, sources, counts, notes)


def _spec_for(ename: str, carried: list[tuple[tuple, dict[str, Any]]], registry: dict[str, EvalSpec],
              observed: list[dict[str, Any]]) -> tuple[EvalSpec, str, list[str]]:
    notes: list[str] = []
    valid: list[EvalSpec] = []
    for _, data in sorted(carried, key=lambda item: item[0]):
        try:
            valid.append(EvalSpec.model_validate(data).model_copy(update={"name": ename}))
        except ValidationError as exc:
            notes.append(f"eval {ename!r}: an annotation carries an invalid eval spec ({exc.error_count()} errors)")
    if valid:
        distinct = {s.digest for s in valid}
        if len(distinct) > 1:
            notes.append(f"eval {ename!r} was run with {len(distinct)} different specs in this window; "
                         "using the latest")
        return valid[-1], "annotation", notes
    base = ename.removeprefix("human.")
    if ename in registry or base in registry:
        spec = registry.get(ename) or registry[base]
        return spec.model_copy(update={"name": ename}), "registry", notes
    return infer_spec(ename, observed), "inferred", notes


def infer_spec(ename: str, observed: list[dict[str, Any]]) -> EvalSpec:
    """A spec from what the annotations themselves show; `template` stays None (it cannot be replayed as an
    LLM judge without one, which the report says)."""
    kinds = {_KINDS.get(str(r.get("annotator_kind") or "").upper(), "llm") for r in observed}
    kind = "human" if ename.startswith("human.") else (kinds.pop() if len(kinds) == 1 else "llm")
    pairs: dict[str, set[float]] = {}
    for r in observed:
        label, score = _val(r.get("label")), _val(r.get("score"))
        if label is not None and score is not None:
            pairs.setdefault(str(label), set()).add(float(score))
    choices = {k: next(iter(v)) for k, v in sorted(pairs.items())} if pairs and all(
        len(v) == 1 for v in pairs.values()) else None
    metas = [r["metadata"] for r in observed if r.get("metadata")]
    model = next((m["model"] for m in reversed(metas) if isinstance(m.get("model"), str)), None)
    direction = next((m["direction"] for m in reversed(metas) if m.get("direction") in ("maximize", "minimize")),
                     "maximize")
    explains = any(_val(r.get("explanation")) for r in observed)
    return EvalSpec(name=ename, kind=kind, choices=choices, judge_model=model, direction=direction,
                    include_explanation=explains)
