"""The built-in optimizer: textual-gradient steps with trials, an LLM merge and a small Pareto population.

One round:
1. choose a parent from the population by per-sample Pareto selection on the validation slice of train;
2. *trials*: on N different minibatches of the parent's feedback (mostly failures, some successes; trial i is
   focused on the i-th largest failure cluster), ask the optimizer model for an update (reasoning, edits naming
   the feedback, new prompt) at the current step size; with `critique`, each minibatch sample first gets a
   generated critique (critique.py) from the budget the current and next round's steps do not need;
3. *merge* the trials' edits into one candidate with an LLM call of the same structure (trial candidates are kept);
4. guard every candidate; score the merged one (or the first guarded trial) on the validation slice and add it
   to the population. The incumbent (the result) changes only when a candidate beats it on the slice (paired
   difference above `accept_z` standard errors, see search.py); when a round brings no gain, the step size grows
   ("magnitude words") and so does the optimizer's temperature.
Then, budget permitting, few-shot demonstrations and (when allowed) model/temperature variants of the incumbent,
each kept only when it wins on validation in the same sense.

Feedback is free where it can be: the current policy's production verdicts on train are used as they are; a child's
feedback is its validation replay. The test split is never seen. Every call is reserved on the shared budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.core.records import Edit, Sample
from selfimprove.optimizers.base import BudgetExhausted, OptimizeContext, OptimizeResult, ScoredSample
from selfimprove.optimizers.compact import request as compact_request
from selfimprove.optimizers.drift import check_cost, check_slice, confirm_final
from selfimprove.optimizers.feedback import feedback_items, minibatch, stored_rows
from selfimprove.optimizers.guards import GuardContext, length_cap, trace_input_texts
from selfimprove.optimizers.metaprompt import MAGNITUDES, merge_messages, update_messages
from selfimprove.optimizers.search import Member, Population
from selfimprove.optimizers.steps import Ledger, Spend, ask_update, candidate_id, edits_of, make_member, score
from selfimprove.optimizers.taxonomy import FailureCluster, failure_taxonomy


@dataclass(frozen=True)
class SearchSettings:
    trials: int = 3
    minibatch: int = 8
    rounds: int = 2
    population: int = 4
    temperature: float = 0.7
    max_growth: float = 2.0
    constitution: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()
    tune_temperature: bool = False
    allow_output_contract_change: bool = False
    val_size: int = 0  # 0: automatic (40% of train, between 8 and 32)
    fewshot: int = 0
    accept_z: float = 0.0  # the incumbent changes when a candidate beats it by > accept_z standard errors
    critique: bool = False  # one generated critique per minibatch sample before each update (critique.py)
    check_size: int = 12  # fresh train samples the final incumbent is re-checked on against the one before (drift.py)
    metaprompt: str = "full"  # "compact": the short request for small optimizer models (compact.py), no merge

    @classmethod
    def from_config(cls, update: Any, **overrides: Any) -> SearchSettings:
        fields = {k: getattr(update, k) for k in ("trials", "minibatch", "rounds", "population", "temperature",
                                                   "max_growth", "tune_temperature",
                                                   "allow_output_contract_change", "critique", "metaprompt") if hasattr(update, k)}
        fields["constitution"] = tuple(getattr(update, "constitution", ()) or ())
        fields["allowed_models"] = tuple(getattr(update, "allowed_models", ()) or ())
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)


def split_validation(train: Sequence[Sample], size: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(validation slice, feedback pool) of train, seeded; the slice is sorted by sample id."""
    ordered = sorted(train, key=lambda s: s.sample_id)
    n = size or min(32, max(8, round(0.4 * len(ordered))))
    n = min(n, max(1, len(ordered) - 1)) if len(ordered) > 1 else len(ordered)
    picked = {s.sample_id for s in random.Random(f"val:{seed}").sample(ordered, n)}
    return [s for s in ordered if s.sample_id in picked], [s for s in ordered if s.sample_id not in picked]


class TextGradOptimizer:
    name = "builtin"

    def __init__(self, settings: SearchSettings):
        self.s = settings

    def guard_context(self, ctx: OptimizeContext) -> GuardContext:
        return GuardContext(evals=ctx.evals, trace_inputs=trace_input_texts(s.history for s in ctx.train),
                            constitution=self.s.constitution, max_growth=self.s.max_growth,
                            allowed_models=self.s.allowed_models, tune_temperature=self.s.tune_temperature,
                            allow_output_contract_change=self.s.allow_output_contract_change)

    def optimize(self, ctx: OptimizeContext) -> OptimizeResult:
        s, rng, log = self.s, random.Random(ctx.seed), ctx.log or (lambda msg: None)
        val, pool = split_validation(ctx.train, s.val_size, ctx.seed)
        gctx, ledger, history = self.guard_context(ctx), Ledger(), []
        seed_id = candidate_id(ctx.policy)
        spend = Spend()
        try:
            seed_rows = score(ctx.scorer, ctx.budget, ctx.policy, val, spend).rows
        except BudgetExhausted:
            need = ctx.scorer.calls_per_sample * len(val)
            raise UsageError(f"a budget of {ctx.budget.max_calls} calls cannot pay for scoring the current policy "
                             f"on the validation slice ({need} calls), let alone a candidate",
                             hint=f"raise --max-calls (at least {2 * need + self.s.trials + 1} for one step)") from None
        pop = Population([x.sample_id for x in val], capacity=s.population)
        pop.add(make_member(seed_id, ctx.policy, seed_rows, ctx))
        incumbent = pop.members[0]
        rows_of: dict[str, list[ScoredSample]] = {seed_id: stored_rows(pool, ctx.evals + ctx.stored_evals)
                                                            + seed_rows}
        log(f"seed {seed_id}: validation mean {pop.members[0].mean:.3f} on {len(val)} samples")
        stall, taxonomy, focus, changes = 0, [], None, [incumbent]
        check = check_slice(pool, s.check_size, ctx.seed)
        critic = None
        if s.critique:
            from selfimprove.optimizers.critique import Critic

            critic = Critic(ctx.lm, ctx.budget, ctx.evals)
        for rnd in range(1, s.rounds + 1):
            magnitude = MAGNITUDES[min(stall, len(MAGNITUDES) - 1)]
            temperature = s.temperature + 0.15 * stall
            trials = self._affordable_trials(ctx, len(val), check_cost(ctx, check) if len(changes) > 1 else 0)
            if trials == 0:
                log(f"round {rnd}: budget left ({ctx.budget.remaining} calls) cannot pay for a step; stopping")
                break
            parent = pop.select_parent(rng) if rnd > 1 else pop.members[0]
            clusters = failure_modes(rows_of[parent.id], ctx)
            if rnd == 1:
                taxonomy = [c.to_dict() for c in clusters]
                focus = self._focus(ctx.focus, clusters)
            clusters = _follow(focus, clusters)
            made = self._round(ctx, ledger, gctx, parent, rows_of[parent.id], clusters, trials, magnitude,
                               temperature, rng, rnd, critic, len(val))
            scored = None
            for cand_id in made:
                cand = ledger.candidates[cand_id]
                if not cand.passed_guards or any(m.id == cand_id for m in pop.members):
                    continue
                try:
                    member, rows = ledger.validate(ctx, cand_id, val, parent=parent.id, rnd=rnd)
                except BudgetExhausted:
                    break
                pop.add(member)
                rows_of[cand_id] = rows
                scored = member
                break
            blocked = pop.regressions(scored, incumbent, ctx.guardrails) if scored is not None else []
            if scored is not None and pop.improves(scored, incumbent, s.accept_z) and not blocked:
                ledger.info[scored.id]["trade_off"] = trade_off(pop, scored, incumbent, ctx)
                incumbent, stall = scored, 0
                changes.append(incumbent)
            else:
                if blocked:
                    ledger.info[scored.id]["blocked_by_guardrails"] = blocked
                    log(f"round {rnd}: {scored.id} not adopted: guardrail regression {'; '.join(blocked)}")
                stall += 1
            history.append({"round": rnd, "parent": parent.id, "magnitude": magnitude, "temperature": temperature,
                            "trials": trials, "candidates": made, "scored": scored.id if scored else None,
                            "val_mean": round(scored.mean, 6) if scored else None,
                            "best": incumbent.id, "best_mean": round(incumbent.mean, 6),
                            "calls_used": ctx.budget.used}
                           | ({"critiques": critic.count(), "critique_calls": critic.calls} if critic else {}))
            log(f"round {rnd}: parent {parent.id}, {len(made)} candidate(s), best {incumbent.id} "
                f"({incumbent.mean:.3f}), {ctx.budget.used}/{ctx.budget.max_calls} calls")
        if len(changes) > 1 and check:
            incumbent, history[-1]["drift_check"] = confirm_final(ctx, changes[-1], changes[-2], check, log)
        from selfimprove.optimizers.fewshot import try_fewshot
        from selfimprove.optimizers.tuning import try_parameters

        if s.fewshot > 0:
            incumbent = try_fewshot(ctx, ledger, gctx, pop, incumbent, val, rows_of, s.fewshot, log, s.accept_z)
        if s.allowed_models or s.tune_temperature:
            incumbent = try_parameters(ctx, ledger, gctx, pop, incumbent, val, s, log)
        seed_info = {"role": "seed", "round": 0, "val_mean": round(pop.members[0].mean, 6),
                     "val_evals": {k: round(v, 6) for k, v in pop.members[0].eval_means().items()}}
        best = incumbent
        return OptimizeResult(candidates=list(ledger.candidates.values()), best=best.id if best.id != seed_id else None,
                              val_scores={m.id: round(m.mean, 6) for m in pop.members} | {
                                  k: v["val_mean"] for k, v in ledger.info.items() if "val_mean" in v},
                              val_ids=[x.sample_id for x in val], taxonomy=taxonomy, history=history,
                              info={**ledger.info, seed_id: seed_info})

    @staticmethod
    def _focus(focus_id: str | None, clusters: Sequence[FailureCluster]) -> FailureCluster | None:
        if focus_id is None:
            return None
        for c in clusters:
            if c.id == focus_id:
                return c
        known = ", ".join(f"{c.id} ({c.eval}, {c.count})" for c in clusters[:10]) or "none"
        raise UsageError(f"no failure cluster {focus_id!r} in this checkpoint's taxonomy",
                         hint=f"clusters: {known}")

    def _affordable_trials(self, ctx: OptimizeContext, n_val: int, keep: int = 0) -> int:
        """How many trials this round can pay for, leaving room for the merge, one validation pass and `keep`."""
        scoring = ctx.scorer.calls_per_sample * n_val
        for trials in range(self.s.trials, 0, -1):
            if ctx.budget.can_afford(trials + (1 if trials > 1 else 0) + scoring + keep):
                return trials
        return 0

    def _round(self, ctx, ledger: Ledger, gctx: GuardContext, parent: Member, rows, clusters, trials: int,
               magnitude: str, temperature: float, rng: random.Random, rnd: int, critic: Any = None,
               n_val: int = 0) -> list[str]:
        """Run the trials and the merge; returns candidate ids, the merged one first. With a `critic`, each
        trial's feedback items are critiqued first, with the budget the step itself does not need."""
        cap = length_cap(parent.policy, self.s.max_growth)
        trial_out, made = [], []
        for t in range(trials):
            # trial t targets the t-th largest failure cluster (all trials the focused one, when focused)
            focus = clusters[0] if ctx.focus and clusters else (
                clusters[t % len(clusters)] if clusters and trials > 1 else None)
            batch = minibatch(rows, ctx.evals, self.s.minibatch, rng, focus, stored=ctx.stored_evals)
            items = feedback_items(batch, ctx.evals, stored=ctx.stored_evals)
            shown = [c.to_dict() for c in clusters[:5]]
            spend = Spend()
            if critic is not None:  # keep this and later trials' updates, the merge, one validation pass ...
                step = trials + (1 if trials > 1 else 0) + ctx.scorer.calls_per_sample * n_val
                keep = step - t + min(self.s.rounds - rnd, 1) * step  # ... and the next round's step
                items = critic.annotate(parent.policy, items, spend, max(0, ctx.budget.remaining - keep))
                gctx.derived_texts[:] = critic.texts()
            fmt = None
            if self.s.metaprompt == "compact":
                msgs, fmt = compact_request(parent.policy, ctx.evals, batch, max_chars=cap,
                                            stored=ctx.stored_evals, constitution=self.s.constitution)
            else:
                msgs = update_messages(parent.policy, ctx.evals + ctx.stored_evals, items, magnitude=magnitude,
                                       max_chars=cap, clusters=shown, constitution=self.s.constitution)
            try:
                update, err = ask_update(ctx.lm, ctx.budget, msgs, temperature, spend, fmt)
            except BudgetExhausted:
                break
            if update is None:
                ctx.log and ctx.log(f"round {rnd} trial {t + 1}: no candidate ({err})")
                continue
            policy = parent.policy.model_copy(update={"system_prompt": update.new_system_prompt})
            cand = ledger.propose(policy, parent.policy, parent.id, update, edits_of(update), gctx, spend,
                                  evidence=_evidence(items), role="trial", round=rnd, trial=t + 1, magnitude=magnitude,
                                  focus=focus.id if focus else None, feedback=[i["sample_id"] for i in items],
                                  **({"critiqued": sum(1 for i in items if "critique" in i)} if critic else {}))
            trial_out.append({"edits": cand.edits, "feedback": items, "id": cand.id})
            made.append(cand.id)
        usable = [t for t in trial_out if ledger.candidates[t["id"]].passed_guards]
        if len(usable) >= 2 and self.s.metaprompt == "full" and ctx.budget.can_afford(1 + ctx.scorer.calls_per_sample):
            msgs = merge_messages(parent.policy, ctx.evals, usable, magnitude=magnitude, max_chars=cap,
                                  constitution=self.s.constitution)
            spend = Spend()
            try:
                update, err = ask_update(ctx.lm, ctx.budget, msgs, temperature, spend)
            except BudgetExhausted:
                update, err = None, "budget"
            if update is not None:
                policy = parent.policy.model_copy(update={"system_prompt": update.new_system_prompt})
                merged = ledger.propose(policy, parent.policy, parent.id, update, edits_of(update), gctx, spend,
                                        evidence=[x for t in usable for x in _evidence(t["feedback"])],
                                        role="merge", round=rnd, magnitude=magnitude,
                                        trials=[t["id"] for t in usable],
                                        kept_trial_edits=kept_edits(policy.system_prompt, usable))
                made.insert(0, merged.id)
        return list(dict.fromkeys(made))


def trade_off(pop: Population, new: Member, old: Member, ctx: OptimizeContext) -> str:
    """Why `new` replaced `old`, in words: each eval's paired change on validation, with its weight and whether it
    is a guardrail, and the weighted reward's change."""
    parts = []
    for spec in ctx.evals:
        mean, se = pop.paired(new, old, spec.name)
        tags = [f"weight {ctx.weights.get(spec.name, 1.0):g}"] + (["guardrail"] if spec.name in ctx.guardrails else [])
        parts.append(f"{spec.name} {mean:+.3f} (se {se:.3f}; {', '.join(tags)})")
    total, se = pop.paired(new, old)
    lost = [spec.name for spec in ctx.evals if pop.paired(new, old, spec.name)[0] < 0]
    verdict = (f"accepted: the weighted reward rose {total:+.3f} (se {se:.3f})"
               + (f" although {', '.join(lost)} fell" if lost else "")
               + ("; no guardrail fell beyond one standard error" if ctx.guardrails else ""))
    return f"{verdict}. Per eval: " + "; ".join(parts)


def _evidence(items: Sequence[dict[str, Any]]) -> list[str]:
    """The feedback an update was shown: the judges' explanations and labels of its feedback items."""
    return [f"{label} {expl}" for it in items for _, label, expl in it["verdicts"]]


def failure_modes(rows: Sequence[ScoredSample], ctx: OptimizeContext) -> list[FailureCluster]:
    """The taxonomy from the configured embeddings; from TF-IDF when there are none or the endpoint fails (said
    once, and not asked again in this run)."""
    if ctx.embed is not None:
        try:
            return failure_taxonomy(rows, ctx.evals, embed=ctx.embed)
        except SelfimproveError as exc:
            ctx.log and ctx.log(f"failure modes: no embeddings ({exc}); clustering TF-IDF vectors instead")
            ctx.embed = None
    return failure_taxonomy(rows, ctx.evals)


def _follow(focus: FailureCluster | None, clusters: list[FailureCluster]) -> list[FailureCluster]:
    """With a focus, the parent's clusters most like it first (same eval, most shared samples, then shared terms);
    the focus itself when the parent no longer fails that way on any sample it was scored on."""
    if focus is None:
        return clusters
    def likeness(c: FailureCluster) -> tuple:
        return (c.eval == focus.eval, len(set(c.sample_ids) & set(focus.sample_ids)),
                len(set(c.terms) & set(focus.terms)), c.count)
    ranked = sorted(clusters, key=likeness, reverse=True)
    return ranked if ranked and likeness(ranked[0])[:3] != (False, 0, 0) else [focus]


def kept_edits(prompt: str, trials: Sequence[dict[str, Any]]) -> dict[str, float]:
    """For each trial, the share of its add/replace edits whose text survives in the merged prompt."""
    low = " ".join(prompt.lower().split())
    out = {}
    for t in trials:
        edits: Sequence[Edit] = [e for e in t["edits"] if e.kind != "remove"]
        kept = sum(1 for e in edits if " ".join(e.instruction.lower().split()) in low)
        out[t["id"]] = round(kept / len(edits), 3) if edits else 1.0
    return out
