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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfimprove.core.records import EvalSpec
from selfimprove.evals.latest import SPEC_KEY, EvalFacts, LatestVerdicts, Verdict, parse_metadata


@dataclass
class Recovered:
    results: dict[str, dict[str, Verdict]]  # span id -> eval name -> latest result (read like an EvalResult)
    specs: dict[str, EvalSpec]  # eval name -> spec
    spec_sources: dict[str, str]  # eval name -> "annotation" | "registry" | "inferred"
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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
    """Join raw annotations (a frame, row dicts, or frames a batch at a time, with the columns of
    `raw.ANNOTATION_COLUMNS`): memory grows with the latest verdicts, not with the annotations read (see
    `evals/latest.py`). `include` keeps only those evals (by their eval name, e.g. `correctness` or
    `human.helpful`). Each distinct metadata text carrying a spec is parsed once."""
    latest = LatestVerdicts(include=frozenset(include) if include else None)
    for frame in _frames(annotations):
        latest.add(frame)
    results = latest.results()
    specs, sources, notes = {}, {}, []
    for ename in sorted(latest.facts):
        facts = latest.facts[ename]
        parsed = {text: parse_metadata(text) for text in set(facts.carried())}
        carried = [parsed[text].get(SPEC_KEY) for text in facts.carried()]
        spec, source, note = _spec_for(ename, [c for c in carried if isinstance(c, dict)], registry or {}, facts)
        specs[ename], sources[ename] = spec, source
        notes += note
    return Recovered(results, specs, sources, latest.counts, notes)


def _frames(annotations: Any) -> Iterator[Any]:
    """pandas frames: the one given, one of the row dicts given, or each of the frames given."""
    import pandas as pd

    if isinstance(annotations, pd.DataFrame):
        yield annotations
        return
    items = iter(annotations)
    first = next(items, None)
    if first is None or isinstance(first, dict):
        yield pd.DataFrame(([first] if first is not None else []) + list(items))
        return
    yield first
    yield from items


def _spec_for(ename: str, carried: list[dict[str, Any]], registry: dict[str, EvalSpec],
              facts: EvalFacts) -> tuple[EvalSpec, str, list[str]]:
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
    return infer_spec(ename, facts), "inferred", notes


def infer_spec(ename: str, facts: EvalFacts) -> EvalSpec:
    """A spec from what the annotations themselves show; `template` stays None (it cannot be replayed as an
    LLM judge without one, which the report says)."""
    kinds = set(facts.kinds)
    kind = "human" if ename.startswith("human.") else (kinds.pop() if len(kinds) == 1 else "llm")
    pairs = facts.pairs
    choices = {k: next(iter(v)) for k, v in sorted(pairs.items())} if pairs and all(
        len(v) == 1 for v in pairs.values()) else None
    labels = tuple(sorted(facts.labels)) if facts.labels and not pairs else None  # never with a score: label-only
    meta = facts.meta[1] if facts.meta is not None else {}
    model = meta["model"] if isinstance(meta.get("model"), str) else None
    direction = meta["direction"] if meta.get("direction") in ("maximize", "minimize") else "maximize"
    return EvalSpec(name=ename, kind=kind, choices=choices, labels=labels, judge_model=model, direction=direction,
                    include_explanation=facts.explains)
