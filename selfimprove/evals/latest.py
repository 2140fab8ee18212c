"""Annotations read a batch at a time -> the latest verdict per (span, eval) and what each eval's spec can be
recovered from, in memory that grows with the verdicts kept, never with the annotations read.

The order is the one a stable sort of all annotations by (`updated_at`, `created_at`, `identifier`), nulls first,
gives: each row's key is those three plus its arrival number, so the latest of equal times is the one read last.
Per eval, `EvalFacts` keeps only what spec recovery needs (the distinct metadata texts carrying a spec, the latest
metadata text, the kinds, label/score pairs and labels seen, and the metadata of the latest row naming a judge
model or direction), not the rows.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from selfimprove.core.records import EvalResult

SPEC_KEY = "selfimprove.eval_spec"
NOTE = "note"
KINDS = {"LLM": "llm", "CODE": "code", "HUMAN": "human"}
COLUMNS = ("span_id", "name", "annotator_kind", "label", "score", "explanation", "metadata", "identifier",
           "created_at", "updated_at")
_NULL_TIME = -(2**63)  # numpy's NaT as int64: before every time, as "nulls first"


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        type(value).__name__ in ("NAType", "NaTType")


def val(value: Any) -> Any:
    return None if missing(value) else value


def parse_metadata(value: Any) -> dict[str, Any]:
    value = val(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def eval_name(name: str, annotator_kind: str | None) -> str:
    return f"human.{name}" if str(annotator_kind or "").upper() == "HUMAN" else name


class Verdict(NamedTuple):
    """One eval's latest verdict on one span, as a snapshot holds one for every span: EvalResult's fields in a
    tuple (~70 bytes against ~450 for the pydantic record; labels and kinds are interned). Read it as an
    EvalResult (same attribute names); `result()` is the record itself."""

    label: str | None
    score: float | None
    explanation: str | None
    annotator_kind: str | None

    def result(self) -> EvalResult:
        return EvalResult(**self._asdict())


@dataclass
class EvalFacts:
    """What one eval's annotations show, for recovering its spec."""

    spec_texts: dict[str, tuple] = field(default_factory=dict)  # metadata text with a spec -> key of its first row
    last_text: tuple | None = None  # (key, text) of the latest row with metadata
    kinds: set[str] = field(default_factory=set)  # annotator kinds, as KINDS maps them
    pairs: dict[str, set[float]] = field(default_factory=dict)  # label -> scores it came with
    labels: set[str] = field(default_factory=set)
    explains: bool = False
    meta: tuple | None = None  # (key, metadata) of the latest row whose metadata names a model or direction

    def carried(self) -> list[str]:
        """The distinct spec-carrying texts in time order of their first row, then the latest text again when
        it carries one (the latest spec wins even when an older text repeats it)."""
        texts = sorted(self.spec_texts, key=self.spec_texts.__getitem__)
        if self.last_text is not None and self.last_text[1] in self.spec_texts:
            texts.append(self.last_text[1])
        return texts


@dataclass
class LatestVerdicts:
    """Feed annotation frames (pandas, the raw annotation columns) in the order they were stored with `add`;
    `results()` then gives span id -> eval name -> latest Verdict. `include` keeps only those eval names."""

    include: frozenset[str] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"annotations": 0, "annotations.notes": 0,
                                                            "annotations.superseded": 0, "annotations.excluded": 0})
    facts: dict[str, EvalFacts] = field(default_factory=dict)
    _latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # span -> eval -> (key, Verdict)
    _arrived: int = 0

    def add(self, frame: Any) -> None:
        rows = len(frame)
        columns = [_column(frame, c, rows) for c in COLUMNS[:-2]] + [_times(frame, c, rows) for c in COLUMNS[-2:]]
        candidates: dict[str, list[tuple]] = {}
        has_spec: dict[str, bool] = {}
        self.counts["annotations"] += rows
        for arrival, row in enumerate(zip(*columns), self._arrived):
            span_id, name, kind, label, score, explanation, metadata, identifier, created, updated = row
            if name == NOTE:
                self.counts["annotations.notes"] += 1
                continue
            ename = eval_name(str(name), None if missing(kind) else kind)
            if self.include is not None and ename not in self.include:
                self.counts["annotations.excluded"] += 1
                continue
            key = (updated, created, "" if missing(identifier) else identifier, arrival)
            label, score, kind = val(label), val(score), val(kind)
            result = Verdict(None if label is None else sys.intern(str(label)),
                             None if score is None else float(score), val(explanation),
                             None if kind is None else sys.intern(str(kind)))
            per_span = self._latest.setdefault(str(span_id), {})
            held = per_span.get(ename)
            if held is None or key > held[0]:
                per_span[ename] = (key, result)
            if held is not None:
                self.counts["annotations.superseded"] += 1
            facts = self.facts.setdefault(ename, EvalFacts())
            facts.kinds.add(KINDS.get(str(kind or "").upper(), "llm"))
            if label is not None:
                facts.labels.add(str(label))
                if score is not None:
                    facts.pairs.setdefault(str(label), set()).add(float(score))
            facts.explains = facts.explains or bool(val(explanation))
            text = metadata if isinstance(metadata, str) else json.dumps(metadata) if isinstance(metadata, dict) \
                else None
            if text is None:
                continue
            if facts.last_text is None or key > facts.last_text[0]:
                facts.last_text = (key, text)
            if has_spec.setdefault(text, SPEC_KEY in text):
                first = facts.spec_texts.get(text)
                if first is None or key < first:
                    facts.spec_texts[text] = key
            if facts.meta is None or key > facts.meta[0]:
                candidates.setdefault(ename, []).append((key, text))
        self._arrived += rows
        self._judge_metadata(candidates)

    def _judge_metadata(self, candidates: dict[str, list[tuple]]) -> None:
        """The newest of this batch's metadata texts that names a judge model or direction, per eval, when it is
        newer than the one held: parsed newest first, so most batches parse one text per eval."""
        parsed: dict[str, dict[str, Any]] = {}
        for ename, rows in candidates.items():
            facts = self.facts[ename]
            for key, text in sorted(rows, key=lambda r: r[0], reverse=True):
                if facts.meta is not None and key <= facts.meta[0]:
                    break
                meta = parsed.setdefault(text, parse_metadata(text))
                if meta.get("model") or meta.get("direction"):
                    facts.meta = (key, meta)
                    break

    def results(self) -> dict[str, dict[str, Verdict]]:
        """span id -> eval name -> the latest result (the held keys are dropped in place: no second copy)."""
        out = self._latest
        for per_span in out.values():
            for ename, (_, result) in per_span.items():
                per_span[ename] = result
        self._latest = {}
        return out


def _column(frame: Any, name: str, rows: int) -> list[Any]:
    return frame[name].tolist() if name in frame.columns else [None] * rows


def _times(frame: Any, name: str, rows: int) -> list[int]:
    """A time column as int64 nanoseconds, missing times first (`_NULL_TIME`)."""
    import pandas as pd

    if name not in frame.columns:
        return [_NULL_TIME] * rows
    stamps = pd.to_datetime(frame[name], utc=True).dt.as_unit("ns")
    return stamps.to_numpy(dtype="datetime64[ns]").view("int64").tolist()
