"""Cost-aware tuning of the call's parameters: the model (from the config's allowed list) and the temperature.

Each variant of the incumbent is scored on the validation slice, cheapest model first. A variant replaces the
incumbent when it beats it (`Population.improves`), or is cheaper (by the configured prices) and not worse by more
than one standard error of the paired difference. Rejected variants are kept as candidates, with their validation mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import Edit, Policy, Sample
from selfimprove.optimizers.base import BudgetExhausted, OptimizeContext
from selfimprove.optimizers.guards import GuardContext
from selfimprove.optimizers.search import Member, Population
from selfimprove.optimizers.steps import Ledger, Spend

TEMPERATURES = (0.0, 0.3, 1.0)


def unit_price(prices: dict[str, Any], model: str) -> float | None:
    """Input + output price per million tokens (None when the model has no configured price)."""
    p = prices.get(model)
    if p is None:
        return None
    get = p.get if isinstance(p, dict) else (lambda k, d=0.0: getattr(p, k, d))
    return float(get("input", 0.0)) + float(get("output", 0.0))


def variants(policy: Policy, allowed_models: Sequence[str], tune_temperature: bool,
             prices: dict[str, Any]) -> list[tuple[Policy, Edit]]:
    out: list[tuple[Policy, Edit]] = []
    models = [m for m in allowed_models if m != policy.model]
    models.sort(key=lambda m: (unit_price(prices, m) is None, unit_price(prices, m) or 0.0, m))
    for m in models:
        out.append((policy.model_copy(update={"model": m}), Edit(instruction=f"model: {policy.model} -> {m}",
                                                                  addresses="cost/quality", kind="param")))
    if tune_temperature:
        for t in TEMPERATURES:
            if policy.temperature is None or abs(t - policy.temperature) > 1e-9:
                out.append((policy.model_copy(update={"temperature": t}),
                            Edit(instruction=f"temperature: {policy.temperature} -> {t}", addresses="variance",
                                 kind="param")))
    return out


def try_parameters(ctx: OptimizeContext, ledger: Ledger, gctx: GuardContext, pop: Population, best: Member,
                   val: Sequence[Sample], settings: Any, log) -> Member:
    """Variants of the incumbent; returns the new incumbent (the incumbent itself when no variant wins)."""
    winner: Member | None = None
    for policy, edit in variants(best.policy, settings.allowed_models, settings.tune_temperature, ctx.prices):
        cand = ledger.propose(policy, best.policy, best.id, None, (edit,), gctx, Spend(), role="params",
                              rationale=f"parameter variant of {best.id}: {edit.instruction}")
        if not cand.passed_guards:
            continue
        try:
            member, _ = ledger.validate(ctx, cand.id, val, parent=best.id)
        except BudgetExhausted:
            log("tuning: no budget left for more parameter variants")
            break
        ref = winner or best
        cheaper = (unit_price(ctx.prices, policy.model) or 0.0) < (unit_price(ctx.prices, ref.policy.model) or 0.0)
        z = getattr(settings, "accept_z", 0.0)
        if not pop.regressions(member, ref, ctx.guardrails) and (
                pop.improves(member, ref, z) or (cheaper and pop.not_worse(member, ref, max(z, 1.0)))):
            winner = member
        log(f"tuning: {edit.instruction}: validation mean {member.mean:.3f}")
    if winner is not None:
        pop.add(winner)
        ledger.info[winner.id]["won"] = True
        return winner
    return best
