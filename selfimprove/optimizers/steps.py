"""The budgeted primitives an optimizer is made of: one optimizer-LM call, one scoring pass, one guarded candidate.

Every function here reserves its calls on the shared Budget first (so the budget is never exceeded) and records
what it spent; a failed call is data (returned as an error string), never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.core.canonical import short
from selfimprove.core.records import Candidate, Edit, GuardResult, Policy, Sample
from selfimprove.optimizers.base import (
    Budget,
    BudgetExhausted,
    LMReply,
    OptimizeContext,
    OptimizerLM,
    ScoreBatch,
    ScoredSample,
    Scorer,
)
from selfimprove.optimizers.guards import GuardContext, run_guards
from selfimprove.optimizers.metaprompt import PolicyUpdate, parse_update, response_format
from selfimprove.optimizers.search import Member


@dataclass
class Spend:
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def add(self, calls: int = 0, tokens: int = 0, cost_usd: float = 0.0) -> None:
        self.calls += calls
        self.tokens += tokens
        self.cost_usd += cost_usd


def candidate_id(policy: Policy) -> str:
    return "c-" + short(policy.digest)


def call_lm(lm: OptimizerLM, budget: Budget, messages: list[dict[str, Any]], temperature: float | None,
            spend: Spend, fmt: dict[str, Any] | None = None) -> tuple[LMReply | None, str | None]:
    """One optimizer call within the budget: (reply, None) or (None, error). Raises BudgetExhausted only before
    anything is spent."""
    budget.reserve(1)
    try:
        reply = lm.complete(messages, response_format=fmt, temperature=temperature)
    except Exception as exc:
        if type(exc).__name__ == "BudgetExceeded":  # the LLM layer's ledger refused it: nothing was sent
            budget.settle(1, 0)
            raise BudgetExhausted(str(exc)) from exc
        budget.settle(1, 1)
        spend.add(calls=1)
        return None, f"{type(exc).__name__}: {exc}"
    budget.settle(1, reply.calls, reply.tokens, reply.cost_usd)
    spend.add(reply.calls, reply.tokens, reply.cost_usd)
    return reply, None


def ask_update(lm: OptimizerLM, budget: Budget, messages: list[dict[str, Any]], temperature: float | None,
               spend: Spend, fmt: dict[str, Any] | None = None) -> tuple[PolicyUpdate | None, str | None]:
    """An update or merge request with the PolicyUpdate structured output (or `fmt`, a schema whose answers
    parse_update also reads, like the compact request's one field)."""
    reply, err = call_lm(lm, budget, messages, temperature, spend, fmt or response_format())
    if reply is None:
        return None, err
    try:
        return parse_update(reply.text), None
    except (ValueError, json.JSONDecodeError) as exc:
        return None, f"unusable answer: {exc}"


def score(scorer: Scorer, budget: Budget, policy: Policy, samples: Sequence[Sample],
          spend: Spend | None = None) -> ScoreBatch:
    """Score `policy` on `samples` within the budget (raises BudgetExhausted, spending nothing, if it may not fit)."""
    need = budget.reserve(scorer.calls_per_sample * len(samples))
    try:
        batch = scorer.score(policy, samples)
    except BaseException:
        budget.settle(need, need)
        raise
    budget.settle(need, batch.calls, batch.tokens, batch.cost_usd)
    if spend is not None:
        spend.add(batch.calls, batch.tokens, batch.cost_usd)
    return batch


@dataclass
class Ledger:
    """Every candidate an optimizer produced (guard-rejected ones too), with what the stage reports about it."""

    candidates: dict[str, Candidate] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def propose(self, policy: Policy, parent: Policy, parent_id: str | None, update: PolicyUpdate | None,
                edits: Sequence[Edit], guard_ctx: GuardContext, spend: Spend, evidence: Sequence[str] | None = None,
                **info: Any) -> Candidate:
        """Guard a proposed policy and record it. With `evidence` (the feedback texts the optimizer was shown),
        added lines that trace to trace data are stripped first and the rest kept (provenance.py)."""
        checked: tuple[GuardResult, ...] = ()
        if evidence is not None:
            policy, edits, checked, strips = _provenance(policy, parent, edits, guard_ctx, evidence)
            if strips:
                info["stripped"] = strips
        guards: tuple[GuardResult, ...] = run_guards(policy, parent, guard_ctx) + checked
        cand = Candidate(id=candidate_id(policy), policy=policy, parent=parent_id, edits=tuple(edits),
                         rationale=update.reasoning if update else info.pop("rationale", ""), guards=guards,
                         calls=spend.calls, tokens=spend.tokens, cost_usd=round(spend.cost_usd, 6))
        if cand.id in self.candidates:  # the same policy again: keep the first, note the repeat
            self.info[cand.id].setdefault("also", []).append(info.get("role"))
            return self.candidates[cand.id]
        self.candidates[cand.id] = cand
        self.info[cand.id] = {"passed_guards": cand.passed_guards, **info}
        return cand

    def charge(self, cand_id: str, spend: Spend) -> None:
        """Add later spend (validation scoring) to a candidate's record."""
        c = self.candidates[cand_id]
        self.candidates[cand_id] = c.model_copy(update={"calls": c.calls + spend.calls,
                                                        "tokens": c.tokens + spend.tokens,
                                                        "cost_usd": round(c.cost_usd + spend.cost_usd, 6)})

    def validate(self, ctx: OptimizeContext, cand_id: str, val: Sequence[Sample], *, parent: str | None,
                 rnd: int = 0) -> tuple[Member, list[ScoredSample]]:
        """Score a candidate on the validation slice, charge it what that cost and record its `val_mean`.

        Raises BudgetExhausted (charging nothing) when the budget cannot pay for the scoring."""
        policy, spend = self.candidates[cand_id].policy, Spend()
        rows = score(ctx.scorer, ctx.budget, policy, val, spend).rows
        self.charge(cand_id, spend)
        member = make_member(cand_id, policy, rows, ctx, rnd=rnd, parent=parent)
        self.info[cand_id]["val_mean"] = round(member.mean, 6)
        self.info[cand_id]["val_evals"] = {k: round(v, 6) for k, v in member.eval_means().items()}
        return member, rows


def make_member(cand_id: str, policy: Policy, rows: Sequence[ScoredSample], ctx: OptimizeContext, *, rnd: int = 0,
                parent: str | None = None) -> Member:
    """A population member from its validation rows: the weighted reward per sample, and each eval's normalised
    score per sample (for the guardrails and the eval front)."""
    from selfimprove.core.scores import normalize_or_worst

    by_eval = {spec.name: {r.sample_id: normalize_or_worst(r.verdicts[spec.name].score if spec.name in r.verdicts
                                                           else None, spec) for r in rows} for spec in ctx.evals}
    return Member(cand_id, policy, {r.sample_id: r.value(ctx.evals, ctx.weights) for r in rows}, round=rnd,
                  parent=parent, by_eval=by_eval, chars=len(policy.system_prompt))


def _provenance(policy: Policy, parent: Policy, edits: Sequence[Edit], ctx: GuardContext,
                evidence: Sequence[str]) -> tuple[Policy, Sequence[Edit], tuple[GuardResult, ...], list[dict]]:
    """(policy without its untraced lines, the edits that survive, the provenance guard's result, the strips)."""
    from selfimprove.optimizers.provenance import strip_untraced

    stripped, strips = strip_untraced(policy, parent, ctx, evidence)
    if not strips:
        return policy, edits, (GuardResult(name="provenance", passed=True),), []
    records = [s.to_dict() for s in strips]
    summary = "; ".join(f"{s.line[:80]!r}: {s.reason}" for s in strips[:3])
    if stripped.system_prompt.split() == parent.system_prompt.split():  # nothing of the proposal is left
        return policy, edits, (GuardResult(name="provenance", passed=False,
                                           reason=f"every added line traces to trace data: {summary}"),), records
    gone = {" ".join(s.line.lower().split()) for s in strips}
    kept = [e for e in edits if " ".join(e.instruction.lower().split()) not in gone]
    return stripped, kept, (GuardResult(name="provenance", passed=True,
                                        reason=f"stripped {len(strips)} line(s): {summary}"),), records


def edits_of(update: PolicyUpdate, prefix: str = "") -> list[Edit]:
    return [Edit(instruction=e.instruction, addresses=(prefix + e.addresses) if e.addresses else "", kind=e.kind)
            for e in update.edits if e.instruction.strip()]


__all__ = ["BudgetExhausted", "Ledger", "Spend", "ask_update", "call_lm", "candidate_id", "edits_of",
           "make_member", "score"]
