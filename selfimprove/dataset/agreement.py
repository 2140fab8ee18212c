"""Where people and an LLM judge labelled the same spans: how often they agree (percent, Cohen's kappa, n), and a
flag on a judge that disagrees with people. A human eval `human.<name>` is paired with the LLM eval `<name>`.

Humans cannot be replayed: their labels are feedback for `update`, and this table is how far the replayable
judge the gate relies on can be trusted. Used by `snapshot` (every annotated span of the window) and the
evaluation report (the checkpoint's samples).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfimprove.core.agreement import agreement, paired_ratings
from selfimprove.core.report import JudgeAgreement

HUMAN_PREFIX = "human."


def judge_agreements(results: Mapping[str, Mapping[str, Any]], kinds: Mapping[str, str], min_kappa: float,
                     min_pairs: int) -> list[JudgeAgreement]:
    """Every (LLM judge, human) pair of eval names present in `kinds` (eval name -> kind), over `results`
    (span id -> eval name -> EvalResult). A pair with no span labelled by both is left out."""
    out = []
    for human in sorted(n for n, k in kinds.items() if k == "human" and n.startswith(HUMAN_PREFIX)):
        judge = human.removeprefix(HUMAN_PREFIX)
        if kinds.get(judge) != "llm":
            continue
        got = agreement(paired_ratings(results, human, judge))
        if got.n == 0:
            continue
        flagged = got.n >= min_pairs and got.kappa is not None and got.kappa < min_kappa
        out.append(JudgeAgreement(judge=judge, human=human, n=got.n, agree=got.agree, percent=got.percent,
                                  kappa=got.kappa, categories=list(got.categories), flagged=flagged))
    return out


def agreement_findings(rows: list[JudgeAgreement], min_kappa: float, min_pairs: int
                       ) -> tuple[list[str], list[str]]:
    """(warnings: one per flagged judge, notes: pairs with too few spans to judge)."""
    warnings, notes = [], []
    for a in rows:
        if a.flagged:
            warnings.append(f"judge {a.judge!r} disagrees with people: Cohen's kappa {a.kappa:.2f} (agreement "
                       f"{a.percent:.0%}, n={a.n}) against {a.human!r}, below {min_kappa:g}. The gate trusts this "
                       f"judge; fix its template or rails before promoting on it (evals.min_judge_kappa)")
        elif a.n < min_pairs:
            notes.append(f"judge {a.judge!r} vs {a.human!r}: only {a.n} spans labelled by both (fewer than "
                       f"{min_pairs}): agreement shown, not judged")
    return warnings, notes
