"""The product's Scorer: `selfimprove.evaluation.replay.score_policy` (replay through the LLM layer, re-judge with the
captured evals as phoenix-evals evaluators) seen through the optimizer's `Scorer` protocol. It lives with the
stages because it wraps one: optimizers see only the protocol, never a stage.

Calls, tokens and cost come from the ledger's bookings (every attempt counts, cache hits are free). A call the
ledger refuses (its budget is the hard stop) becomes `BudgetExhausted`, which ends the search gracefully.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import EvalSpec, Policy, Sample
from selfimprove.optimizers.base import BudgetExhausted, ScoreBatch, ScoredSample, Verdict


class ReplayScorer:
    def __init__(self, policy_scorer: Any, evals: Sequence[EvalSpec], ledger: Any):
        self.ps, self.evals, self.ledger = policy_scorer, tuple(evals), ledger
        judged = [e for e in self.evals if e.name in policy_scorer.judges]
        self.calls_per_sample = 1 + sum(1 for e in judged if e.kind == "llm")
        self.skipped = dict(policy_scorer.skipped)

    @classmethod
    def from_config(cls, cfg: Any, evals: Sequence[EvalSpec], *, cache: Any, ledger: Any,
                    batch_dir: Any = None, on_event: Any = None) -> ReplayScorer:
        """`batch_dir`: score through the Batch API with the run's batch journal there (see PolicyScorer)."""
        from selfimprove.evaluation.replay import PolicyScorer

        ps = PolicyScorer.from_config(cfg, cache_dir=cache.root, evals=evals, ledger=ledger, batch_dir=batch_dir,
                                      on_event=on_event)
        return cls(ps, evals, ledger)

    def score(self, policy: Policy, samples: Sequence[Sample]) -> ScoreBatch:
        from selfimprove.evaluation.replay import score_policy
        from selfimprove.llm.accounting import BudgetExceeded

        before = self.ledger.snapshot()
        try:
            frame = score_policy(policy, samples, [e for e in self.evals if e.name in self.ps.judges],
                                 scorer=self.ps)
        except BudgetExceeded as exc:
            raise BudgetExhausted(exc.message) from exc
        after = self.ledger.snapshot()
        by_sample: dict[str, dict[str, Any]] = {}
        for row in frame.to_dict(orient="records"):
            entry = by_sample.setdefault(row["sample_id"], {"output": row["output"], "error": row["gen_error"],
                                                            "verdicts": {}})
            score = row["score"]
            entry["verdicts"][row["eval"]] = Verdict(
                score=None if score is None or math.isnan(score) else float(score), label=_text(row["label"]),
                explanation=_text(row["explanation"]) or _text(row["error"]))
        rows = []
        for s in samples:
            e = by_sample.get(s.sample_id, {"output": None, "error": "not scored", "verdicts": {}})
            rows.append(ScoredSample(sample_id=s.sample_id, history=s.history, output=_text(e["output"]) or "",
                                     verdicts=e["verdicts"], error=_text(e["error"])))
        return ScoreBatch(rows=rows, calls=after.calls - before.calls, tokens=after.tokens - before.tokens,
                          cost_usd=after.cost_usd - before.cost_usd)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None
