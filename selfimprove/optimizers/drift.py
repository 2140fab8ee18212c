"""No drift: the final pick must not be worse than an earlier incumbent on data the search did not select on.

Every incumbent change is decided on the validation slice, and late in a search many challengers each get a try
at it, so the last one to win may have won by luck (held-out scores fell 0.01-0.06 after the first round on the
simulator's worlds). Before it returns, the built-in search re-scores its final incumbent and the one it replaced
on a *check slice*: train samples outside the validation slice, never used to accept anything. The earlier
incumbent is kept when its mean over validation and check together is higher (the final's validation lead is
diluted by fresh evidence rather than trusted alone); ties keep the later one. The calls are reserved from the
first incumbent change on, so the check is always paid for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import Sample
from selfimprove.optimizers.base import BudgetExhausted, OptimizeContext
from selfimprove.optimizers.search import Member
from selfimprove.optimizers.steps import Spend, score


def check_slice(pool: Sequence[Sample], size: int, seed: int) -> list[Sample]:
    """`size` samples of the feedback pool (seeded), at most a third of it; sorted by sample id."""
    ordered = sorted(pool, key=lambda s: s.sample_id)
    n = min(size, len(ordered) // 3)
    picked = {s.sample_id for s in random.Random(f"check:{seed}").sample(ordered, n)} if n > 0 else set()
    return [s for s in ordered if s.sample_id in picked]


def check_cost(ctx: OptimizeContext, check: Sequence[Sample]) -> int:
    """The calls the final check takes: two policies on the check slice."""
    return 2 * ctx.scorer.calls_per_sample * len(check)


def confirm_final(ctx: OptimizeContext, final: Member, previous: Member, check: Sequence[Sample],
                  log: Any) -> tuple[Member, dict[str, Any]]:
    """(the pick, a record of the check): `previous` when its mean over validation and check is higher."""
    means = {}
    try:
        for m in (final, previous):
            rows = score(ctx.scorer, ctx.budget, m.policy, check, Spend()).rows
            fresh = [r.value(ctx.evals, ctx.weights) for r in rows]
            means[m.id] = (sum(m.scores.values()) + sum(fresh)) / (len(m.scores) + len(fresh))
    except BudgetExhausted:
        log("drift check: no budget left to re-score the last two incumbents; the final incumbent stands")
        return final, {"skipped": "budget"}
    pick = previous if means[previous.id] > means[final.id] else final
    record = {"final": final.id, "previous": previous.id, "check_samples": len(check), "kept": pick.id,
              "means": {k: round(v, 6) for k, v in means.items()}}
    log(f"drift check on {len(check)} fresh samples: {final.id} {means[final.id]:.3f} vs the incumbent before it "
        f"{previous.id} {means[previous.id]:.3f} (validation and check); keeping {pick.id}")
    return pick, record
