"""`--optimizer gepa`: the `gepa` package (optional extra) driven through a GEPAAdapter over our replay and judges.

- `evaluate(batch, candidate)` replays the candidate's system prompt (the policy's other parameters unchanged) on
  the batch with our Scorer and returns each sample's aggregate score, per-eval objective scores, and (for
  reflection) trajectories holding the input, the output and every judge's label and explanation;
- `make_reflective_dataset` turns those trajectories into GEPA's {Inputs, Generated Outputs, Feedback} records,
  the feedback being the judges' explanations;
- the reflection LM is our optimizer model, as a plain callable.
Same budget accounting as the built-in optimizer: every replay, judge and reflection call is reserved on the
shared Budget, and a stopper ends the run when the next step could not be paid for. Guards run *before* a
candidate is evaluated (against the seed policy, so the length cap does not compound): a candidate that fails them
scores 0 without spending a call, so GEPA never adopts it; it is still reported, with the reason.
The same validation slice of train is GEPA's valset; the feedback pool is its trainset; test is never seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfimprove.core.errors import UsageError
from selfimprove.core.records import Candidate, EvalSpec, Policy, Sample
from selfimprove.optimizers.base import Budget, BudgetExhausted, OptimizeContext, OptimizeResult, Scorer
from selfimprove.optimizers.feedback import input_text
from selfimprove.optimizers.guards import GuardContext, run_guards
from selfimprove.optimizers.steps import Spend, call_lm, candidate_id, score

COMPONENT = "system_prompt"
REFLECTION_MINIBATCH = 3


class SelfimproveGEPAAdapter:
    """A `gepa.core.adapter.GEPAAdapter` (DataInst = Sample, Trajectory = dict, RolloutOutput = str)."""

    propose_new_texts = None

    def __init__(self, policy: Policy, evals: Sequence[EvalSpec], scorer: Scorer, budget: Budget,
                 guard_ctx: GuardContext, weights: dict[str, float] | None = None):
        self.policy, self.evals, self.scorer, self.budget, self.guard_ctx = policy, tuple(evals), scorer, budget, guard_ctx
        self.weights = weights or {}
        self.spend: dict[str, Spend] = {}  # candidate id -> what evaluating it cost
        self.rejected: dict[str, Policy] = {}  # guard-rejected proposals, kept for the record

    def policy_for(self, candidate: dict[str, str]) -> Policy:
        return self.policy.model_copy(update={"system_prompt": candidate[COMPONENT]})

    def evaluate(self, batch: list[Sample], candidate: dict[str, str], capture_traces: bool = False):
        from gepa.core.adapter import EvaluationBatch

        policy = self.policy_for(candidate)
        zero = [{spec.name: 0.0 for spec in self.evals} for _ in batch]
        if policy.system_prompt != self.policy.system_prompt and not all(
                g.passed for g in run_guards(policy, self.policy, self.guard_ctx)):
            self.rejected.setdefault(candidate_id(policy), policy)
            traj = [{"input": input_text(s.history), "output": "", "feedback": "rejected by the guards"}
                    for s in batch] if capture_traces else None
            return EvaluationBatch(outputs=[""] * len(batch), scores=[0.0] * len(batch), trajectories=traj,
                                   objective_scores=zero)
        spend = self.spend.setdefault(candidate_id(policy), Spend())
        rows = score(self.scorer, self.budget, policy, batch, spend).rows  # BudgetExhausted ends the iteration
        by_id = {r.sample_id: r for r in rows}
        rows = [by_id[s.sample_id] for s in batch]
        objective = [{spec.name: _norm(r, spec) for spec in self.evals} for r in rows]
        traj = None
        if capture_traces:
            traj = [{"input": input_text(r.history), "output": r.output, "feedback": _feedback(r, self.evals)}
                    for r in rows]
        return EvaluationBatch(outputs=[r.output for r in rows], scores=[r.value(self.evals, self.weights) for r in rows],
                               trajectories=traj, objective_scores=objective)

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: Any,
                                components_to_update: list[str]) -> dict[str, list[dict[str, Any]]]:
        records = [{"Inputs": t["input"], "Generated Outputs": t["output"], "Feedback": t["feedback"]}
                   for t in eval_batch.trajectories or []]
        return {name: records for name in components_to_update}


def _norm(row: Any, spec: EvalSpec) -> float:
    return row.value([spec])


def _feedback(row: Any, evals: Sequence[EvalSpec]) -> str:
    if row.error:
        return f"The call failed: {row.error}"
    parts = []
    for spec in evals:
        v = row.verdicts.get(spec.name)
        if v is not None:
            parts.append(f"{spec.name}: {v.label or v.score} — {v.explanation or 'no explanation'}")
    return "\n".join(parts) or "no feedback"


class _BudgetStopper:
    """Stops GEPA when one more proposal (a reflection call and two minibatch evaluations) cannot be paid for."""

    def __init__(self, budget: Budget, need: int):
        self.budget, self.need = budget, need

    def __call__(self, gepa_state: Any) -> bool:
        return not self.budget.can_afford(self.need)


class _QuietLogger:
    def __init__(self, log):
        self._log = log

    def log(self, message: str) -> None:
        if self._log and ("Iteration" in message and ("score" in message or "Best" in message)):
            self._log("gepa: " + message.strip().splitlines()[0][:200])


class GEPAOptimizer:
    name = "gepa"

    def __init__(self, settings: Any):
        self.s = settings

    def optimize(self, ctx: OptimizeContext) -> OptimizeResult:
        try:
            import gepa
        except ImportError as exc:
            raise UsageError("the gepa optimizer needs the `gepa` package",
                             hint="pip install 'selfimprove[gepa]'") from exc
        from selfimprove.optimizers.textgrad import TextGradOptimizer, split_validation

        val, pool = split_validation(ctx.train, self.s.val_size, ctx.seed)
        gctx = TextGradOptimizer(self.s).guard_context(ctx)
        adapter = SelfimproveGEPAAdapter(ctx.policy, ctx.evals, ctx.scorer, ctx.budget, gctx, ctx.weights)
        reflections: list[Spend] = []

        def reflection_lm(prompt: str | list[dict[str, Any]]) -> str:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            spend = Spend()
            reply, err = call_lm(ctx.lm, ctx.budget, messages, self.s.temperature, spend)  # may raise BudgetExhausted
            reflections.append(spend)
            if reply is None:
                raise RuntimeError(f"reflection call failed: {err}")
            return reply.text

        need = 1 + 2 * REFLECTION_MINIBATCH * ctx.scorer.calls_per_sample
        log = ctx.log or (lambda m: None)
        try:
            result = gepa.optimize(
                seed_candidate={COMPONENT: ctx.policy.system_prompt}, trainset=pool or val, valset=val,
                adapter=adapter, reflection_lm=reflection_lm, reflection_minibatch_size=REFLECTION_MINIBATCH,
                candidate_selection_strategy="pareto", stop_callbacks=[_BudgetStopper(ctx.budget, need)],
                logger=_QuietLogger(log), raise_on_exception=False, seed=ctx.seed, display_progress_bar=False,
                skip_perfect_score=True, perfect_score=1.0)
        except BudgetExhausted:
            log("gepa: the budget cannot pay for scoring the seed on the validation slice")
            return OptimizeResult(candidates=[], best=None, val_ids=[s.sample_id for s in val])
        return self._result(ctx, result, adapter, gctx, val, reflections)

    def _result(self, ctx, result, adapter, gctx, val, reflections) -> OptimizeResult:
        seed_id = candidate_id(ctx.policy)
        ids = [candidate_id(adapter.policy_for(c)) for c in result.candidates]
        candidates, info, val_scores = [], {}, {}
        per_reflection = Spend(sum(s.calls for s in reflections), sum(s.tokens for s in reflections),
                               sum(s.cost_usd for s in reflections))
        n_new = max(len(ids) - 1, 1)
        for i, (cand_text, cid) in enumerate(zip(result.candidates, ids, strict=True)):
            val_scores[cid] = round(float(result.val_aggregate_scores[i]), 6)
            if cid == seed_id:
                info[cid] = {"role": "seed", "round": 0, "val_mean": val_scores[cid]}
                continue
            policy = adapter.policy_for(cand_text)
            parents = [p for p in (result.parents[i] or []) if p is not None]
            parent = adapter.policy_for(result.candidates[parents[0]]) if parents else ctx.policy
            spend = adapter.spend.get(cid, Spend())
            candidates.append(Candidate(
                id=cid, policy=policy, parent=candidate_id(parent), edits=(),
                rationale="GEPA reflective mutation from the judges' feedback",
                guards=run_guards(policy, parent, gctx), calls=spend.calls + per_reflection.calls // n_new,
                tokens=spend.tokens, cost_usd=round(spend.cost_usd, 6)))
            info[cid] = {"role": "gepa", "round": i, "val_mean": val_scores[cid], "passed_guards":
                         candidates[-1].passed_guards, "parents": [ids[p] for p in parents]}
        for cid, policy in adapter.rejected.items():  # proposals GEPA never adopted because the guards refused them
            if cid not in info:
                candidates.append(Candidate(id=cid, policy=policy, parent=seed_id, edits=(),
                                            rationale="GEPA reflective mutation, refused by the guards before "
                                                      "evaluation", guards=run_guards(policy, ctx.policy, gctx)))
                info[cid] = {"role": "gepa", "round": 0, "passed_guards": False, "parents": []}
        ok = [cid for cid in ids if cid == seed_id or info.get(cid, {}).get("passed_guards")]
        best = max(ok, key=lambda c: (val_scores[c], c == seed_id)) if ok else seed_id
        return OptimizeResult(candidates=candidates, best=None if best == seed_id else best, val_scores=val_scores,
                              val_ids=[s.sample_id for s in val], info=info,
                              history=[{"gepa_metric_calls": result.total_metric_calls,
                                        "reflection_calls": per_reflection.calls, "calls_used": ctx.budget.used}])
