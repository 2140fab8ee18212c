"""Few-shot demonstrations (the seeds' retrieval memory): high-scoring, varied train samples added to the best
policy as user/assistant pairs, kept only when the result wins on the validation slice.

Demonstrations come from the feedback pool, never from the validation slice (that would grade them on
themselves) and never from the test split. Samples whose text looks planted (links, addresses, code,
instruction-like phrases) are never chosen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from selfimprove.core.records import EvalSpec, Message, Sample
from selfimprove.optimizers.base import BudgetExhausted, OptimizeContext, ScoredSample
from selfimprove.optimizers.feedback import stored_rows
from selfimprove.optimizers.guards import GuardContext, planted_findings
from selfimprove.optimizers.search import Member, Population
from selfimprove.optimizers.steps import Ledger, Spend

_WORD = re.compile(r"\w+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def choose_demonstrations(rows: Sequence[ScoredSample], samples: dict[str, Sample], evals: Sequence[EvalSpec],
                          k: int, gctx: GuardContext) -> list[Sample]:
    """Up to k samples with a perfect (or else the highest) score, greedily chosen to be far apart (max-min Jaccard
    distance of their input words); deterministic."""
    clean = []
    for r in rows:
        s = samples.get(r.sample_id)
        if s is None or s.output is None or s.output.tool_calls:  # a tool call needs its results: no demo
            continue
        text = "\n".join(m.text() for m in s.history) + "\n" + s.output.text()
        if not planted_findings(text, "", gctx, copies=False):
            clean.append((r.value(evals), r.sample_id, s))
    if not clean:
        return []
    top = max(v for v, _, _ in clean)
    pool = sorted([(sid, s) for v, sid, s in clean if v >= top - 1e-9])
    words = {sid: _words(" ".join(m.text() for m in s.history if m.role == "user")) for sid, s in pool}

    def dist(a: str, b: str) -> float:
        union = words[a] | words[b]
        return 1.0 - len(words[a] & words[b]) / len(union) if union else 0.0

    chosen = [pool[0][0]]
    while len(chosen) < min(k, len(pool)):
        rest = [sid for sid, _ in pool if sid not in chosen]
        chosen.append(max(rest, key=lambda sid: (min(dist(sid, c) for c in chosen), sid)))
    by_id = dict(pool)
    return [by_id[sid] for sid in chosen]


def demonstration_messages(demos: Sequence[Sample]) -> tuple[Message, ...]:
    out: list[Message] = []
    for s in demos:
        users = [m for m in s.history if m.role == "user"]
        if users and s.output is not None:
            out += [Message(role="user", content=users[-1].text()),
                    Message(role="assistant", content=s.output.text())]
    return tuple(out)


def try_fewshot(ctx: OptimizeContext, ledger: Ledger, gctx: GuardContext, pop: Population, best: Member,
                val: Sequence[Sample], rows_of: dict, k: int, log, z: float = 0.0) -> Member:
    """Add k demonstrations to the incumbent; returns the new incumbent (the demonstrations' candidate when it
    beats the incumbent on validation (by more than z standard errors), else the incumbent)."""
    val_ids = {s.sample_id for s in val}
    pool = [s for s in ctx.train if s.sample_id not in val_ids]
    demos = choose_demonstrations(stored_rows(pool, ctx.evals), {s.sample_id: s for s in pool}, ctx.evals, k, gctx)
    if not demos:
        log("few-shot: no clean high-scoring demonstration in the feedback pool")
        return best
    policy = best.policy.model_copy(update={"few_shot": best.policy.few_shot + demonstration_messages(demos)})
    cand = ledger.propose(policy, best.policy, best.id, None, (), gctx, Spend(), role="fewshot",
                          rationale=f"{len(demos)} demonstration(s) from high-scoring, varied train samples",
                          demos=[s.sample_id for s in demos])
    if not cand.passed_guards:
        return best
    try:
        member, rows = ledger.validate(ctx, cand.id, val, parent=best.id)
    except BudgetExhausted:
        log("few-shot: no budget left to validate demonstrations")
        return best
    won = pop.improves(member, best, z) and not pop.regressions(member, best, ctx.guardrails)
    ledger.info[cand.id]["won"] = won
    log(f"few-shot: {cand.id} validation mean {member.mean:.3f} vs {best.mean:.3f}: {'kept' if won else 'dropped'}")
    if won:
        pop.add(member)
        rows_of[cand.id] = rows
        return member
    return best
