"""What report.html shows beside the report document: the gate's verdict on the best candidate, the prompt diff,
and a few held-out samples the candidate fixed and broke, each with both outputs and the judge's explanations.

`report_page(...)` gathers them from what evaluate already holds (the report, the results rows, the samples, the
policies, the gate settings) into a typed `ReportPage`; evaluation.html renders it without any other input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfimprove.core.records import Policy, Sample
from selfimprove.core.report import Report
from selfimprove.evaluation.report import BASELINE

EXAMPLES_PER_KIND = 3
TEXT_LIMIT = 1200  # characters of an input or output shown; the rest is in results.parquet


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Verdict(Part):
    """The gate applied to the best candidate's evidence, as `promote` would (a preview: promote decides)."""

    candidate: str
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class Side(Part):
    output: str | None = None
    error: str | None = None
    label: str | None = None
    score: float | None = None
    explanation: str | None = None


class Example(Part):
    """One held-out sample where the best candidate's primary score differs from the baseline's."""

    kind: Literal["fixed", "broken"]
    sample_id: str
    input: str
    baseline: Side
    candidate: Side


class ReportPage(Part):
    report: Report
    simulated: bool = False
    verdict: Verdict | None = None
    prompt_diff: str = ""
    examples: list[Example] = Field(default_factory=list)


def report_page(report: Report, rows: Iterable[Mapping[str, Any]], samples: Sequence[Sample], baseline: Policy,
                policies: Mapping[str, Policy], *, decision: Any = None, simulated: bool = False) -> ReportPage:
    """The page's content. `policies` maps candidate id -> policy; `decision` is core.gate's GateDecision for
    `report.best` (None: no best candidate, no verdict)."""
    from selfimprove.core.diffs import policy_diff

    best = report.best
    verdict = None
    if decision is not None and best:
        verdict = Verdict(candidate=best, passed=decision.passed, reasons=list(decision.reasons),
                          warnings=list(decision.warnings))
    diff = policy_diff(baseline, policies[best], BASELINE, best) if best in policies else ""
    examples = fixed_and_broken(report, rows, samples, best) if best else []
    return ReportPage(report=report, simulated=simulated, verdict=verdict, prompt_diff=diff.strip(),
                      examples=examples)


def fixed_and_broken(report: Report, rows: Iterable[Mapping[str, Any]], samples: Sequence[Sample], best: str,
                     k: int = EXAMPLES_PER_KIND) -> list[Example]:
    """Up to `k` samples the candidate fixed (primary score better than the baseline's) and `k` it broke, the
    largest changes first, ties by sample id (deterministic)."""
    primary = report.primary_eval
    entry = report.entry(best)
    stats = entry.evals.get(primary) if entry else None
    sign = -1.0 if stats is not None and stats.direction == "minimize" else 1.0
    sides: dict[tuple[str, str], Side] = {}
    for r in rows:
        if r.get("eval") == primary and r.get("policy") in (BASELINE, best):
            sides[(r["policy"], r["sample_id"])] = Side(
                output=_clip(r.get("output")), error=_clip(r.get("gen_error") or r.get("error")),
                label=_str(r.get("label")), score=_num(r.get("score")), explanation=_clip(r.get("explanation")))
    by_id = {s.sample_id: s for s in samples}
    changes = []
    for (policy, sid), cand in sides.items():
        base = sides.get((BASELINE, sid))
        if policy != best or base is None or base.score is None or cand.score is None or sid not in by_id:
            continue
        gain = sign * (cand.score - base.score)
        if gain:
            changes.append((gain, sid, base, cand))
    out: list[Example] = []
    for kind, chosen in (("fixed", sorted((c for c in changes if c[0] > 0), key=lambda c: (-c[0], c[1]))),
                         ("broken", sorted((c for c in changes if c[0] < 0), key=lambda c: (c[0], c[1])))):
        out += [Example(kind=kind, sample_id=sid, input=_clip(_last_user_text(by_id[sid])) or "",
                        baseline=base, candidate=cand) for _, sid, base, cand in chosen[:k]]
    return out


def _last_user_text(sample: Sample) -> str:
    user = [m for m in sample.history if m.role == "user"]
    return user[-1].text() if user else (sample.history[-1].text() if sample.history else "")


def _clip(value: Any) -> str | None:
    text = _str(value)
    if text is None:
        return None
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + " …"


def _str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x
