"""Span annotations -> each span's latest verdict per eval, and each eval's EvalSpec.

- The latest annotation wins per (span, eval): by `updated_at`, then `created_at`, then `identifier`.
- Human annotations are their own eval, named `human.<name>`, never mixed with an LLM judge of the same name.
- Phoenix notes (name `note`) are not evals and are skipped.
- The spec of an eval comes, in order, from the annotation metadata key `selfimprove.eval_spec` (written by the
  EvalInstrumentor: the latest annotation carrying one wins, and several distinct specs are reported), a local
  registry (`<root>/evals/<name>.json`, an EvalSpec as JSON), or is inferred from what the annotations show
  (kind, label -> score choices when consistent, or the labels when no annotation has a score, the judge model
  and direction phoenix-evals records).
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


def recover(annotations: Any, registry: dict[str, EvalSpec] | None = None,
            include: list[str] | None = None) -> Recovered:
    """Join raw annotations (a frame, or row dicts, with the columns of `raw.ANNOTATION_COLUMNS`). `include` keeps
    only those evals (by their eval name, e.g. `correctness` or `human.helpful`). Vectorised: 20,000 rows in a
    fraction of a second; each distinct metadata text is parsed once."""
    import pandas as pd

    registry = registry or {}
    df = annotations if isinstance(annotations, pd.DataFrame) else pd.DataFrame(list(annotations))
    for col in ("span_id", "name", "annotator_kind", "label", "score", "explanation", "metadata", "identifier",
                "created_at", "updated_at"):
        if col not in df.columns:
            df[col] = None
    counts = {"annotations": len(df), "annotations.notes": int((df["name"] == NOTE).sum()),
              "annotations.superseded": 0, "annotations.excluded": 0}
    df = df[df["name"] != NOTE]
    human = df["annotator_kind"].fillna("").astype(str).str.upper() == "HUMAN"
    names = df["name"].astype(str)
    df = df.assign(ename=names.where(~human, "human." + names), identifier=df["identifier"].fillna(""))
    if include:
        keep = df["ename"].isin(include)
        counts["annotations.excluded"] = int((~keep).sum())
        df = df[keep]
    df = df.sort_values(["updated_at", "created_at", "identifier"], kind="stable", na_position="first")
    latest = df.drop_duplicates(["span_id", "ename"], keep="last")
    counts["annotations.superseded"] = len(df) - len(latest)
    results: dict[str, dict[str, EvalResult]] = {}
    cols = [latest[c].tolist() for c in ("span_id", "ename", "label", "score", "explanation", "annotator_kind")]
    for span_id, ename, label, score, explanation, kind in zip(*cols):
        score = _val(score)
        results.setdefault(str(span_id), {})[ename] = EvalResult(
            label=None if _val(label) is None else str(label), score=None if score is None else float(score),
            explanation=_val(explanation), annotator_kind=_val(kind))
    specs, sources, notes = {}, {}, []
    parsed: dict[str, dict[str, Any]] = {}
    for ename, group in df.groupby("ename", sort=True):
        texts = [t if isinstance(t, str) else json.dumps(t) for t in group["metadata"].tolist()
                 if isinstance(t, (str, dict))]
        carried = []
        for text in dict.fromkeys(t for t in texts if SPEC_KEY in t):  # distinct texts, in time order
            meta = parsed.setdefault(text, _metadata(text))
            if isinstance(meta.get(SPEC_KEY), dict):
                carried.append(meta[SPEC_KEY])
        if texts and SPEC_KEY in texts[-1]:  # the latest spec last, even when an older text repeats it
            carried.append(parsed[texts[-1]].get(SPEC_KEY))
        spec, source, note = _spec_for(str(ename), [c for c in carried if isinstance(c, dict)], registry,
                                       _observed(group))
        specs[str(ename)], sources[str(ename)] = spec, source
        notes += note
    return Recovered(results, specs, sources, counts, notes)


def _observed(group: Any) -> list[dict[str, Any]]:
    """What inference needs from one eval's annotations: kinds, label/score pairs, and the metadata of the
    latest rows that have any (parsed lazily, newest first)."""
    rows = group[["annotator_kind", "label", "score", "explanation"]].drop_duplicates().to_dict(orient="records")
    for text in reversed(group["metadata"].tolist()):
        meta = _metadata(text)
        if meta.get("model") or meta.get("direction"):
            rows.append({"annotator_kind": group["annotator_kind"].iloc[-1], "label": None, "score": None,
                         "explanation": None, "metadata": meta})
            break
    return rows


def _spec_for(ename: str, carried: list[dict[str, Any]], registry: dict[str, EvalSpec],
              observed: list[dict[str, Any]]) -> tuple[EvalSpec, str, list[str]]:
    notes: list[str] = []
    valid: list[EvalSpec] = []
    for data in carried:
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
    seen = sorted({str(r["label"]) for r in observed if _val(r.get("label")) is not None})
    labels = tuple(seen) if seen and not pairs else None  # labels that never came with a score: label-only
    metas = [r["metadata"] for r in observed if isinstance(r.get("metadata"), dict)]
    model = next((m["model"] for m in reversed(metas) if isinstance(m.get("model"), str)), None)
    direction = next((m["direction"] for m in reversed(metas) if m.get("direction") in ("maximize", "minimize")),
                     "maximize")
    explains = any(_val(r.get("explanation")) for r in observed)
    return EvalSpec(name=ename, kind=kind, choices=choices, labels=labels, judge_model=model, direction=direction,
                    include_explanation=explains)
