"""Optimizer benchmark on the simulator: selfimprove (built-in) vs GEPA vs no change vs a one-shot rewrite.

For each world (default: the hard world `support_hard`, where one rewrite does not suffice; `support` and `routing`
on request) and seed (5): production traffic of the world's default policy is judged (the
checkpoint's stored verdicts), split into train and a held-out test set; every method gets the same simulated
task, judge and optimizer models and the same budget of LLM calls (task + judge + optimizer calls, counted at
the simulator), learns on train only, and its final policy is scored on the held-out test set (never shown to
any optimizer). Prints the table and the targets:
  1. selfimprove's mean held-out score / GEPA's, at equal budget (target >= 1.05);
  2. the calls selfimprove needs to reach GEPA's final held-out score / the calls GEPA used (target <= 50%),
     from selfimprove's trajectory (the incumbent after each round, scored on test);
  3. the one-shot rewrite clearly below selfimprove (mean gap >= 0.05);
  4. drift: the best held-out score of an earlier incumbent minus the final pick's (mean over runs, target <= 0.01).

Usage: python benchmarks/bench_optimizer.py [--budget 400] [--seeds 5] [--train 60] [--test 100] [--worlds ...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from selfimprove.core.records import EvalResult, EvalSpec, Message, Policy, Sample
from selfimprove.optimizers.base import Budget, OptimizeContext
from selfimprove.optimizers.compact import request as compact_request
from selfimprove.optimizers.feedback import feedback_items, minibatch, stored_rows
from selfimprove.optimizers.guards import length_cap
from selfimprove.optimizers.lm import OpenAIOptimizerLM, make_client
from selfimprove.optimizers.metaprompt import update_messages
from selfimprove.optimizers.steps import Spend, ask_update
from selfimprove.optimizers.textgrad import SearchSettings, TextGradOptimizer
from selfimprove.sim import default_policy, generate_inputs, start_server, world_evals


def make_scorer(base_url: str, evals: tuple[EvalSpec, ...], task_model: str):
    from selfimprove.evals.judges import JudgeEndpoint, build_judges
    from selfimprove.evaluation.replay import PolicyScorer
    from selfimprove.evaluation.scorer import ReplayScorer
    from selfimprove.llm import Ledger, OpenAIChat

    ledger = Ledger()
    llm = OpenAIChat(base_url, model=task_model, ledger=ledger, concurrency=32, max_retries=0)
    judges, _ = build_judges(evals, JudgeEndpoint(base_url=base_url, api_key="sim"), cache=None, ledger=ledger)
    return ReplayScorer(PolicyScorer(llm, judges, concurrency=32, ledger=ledger), evals, ledger)


def world_setup(world: str, base_url: str, seed: int, n_train: int, n_test: int):
    evals = tuple(EvalSpec(name=e["name"], template=e["template"], choices=e["choices"], judge_model="sim-judge",
                           direction=e.get("direction", "maximize")) for e in world_evals(world))
    policy = Policy(**default_policy(world))
    scorer = make_scorer(base_url, evals, policy.model)
    histories = generate_inputs(world, n_train + n_test, seed=1000 + seed)
    samples = [Sample(sample_id=f"s{seed}-{i:04d}", span_id=f"sp{i}", trace_id=f"tr{i}",
                      history=tuple(Message(**m) for m in h)) for i, h in enumerate(histories)]
    random.Random(seed).shuffle(samples)
    train, test = samples[:n_train], samples[n_train:]
    judged = scorer.score(policy, train).rows  # production: the current policy's outputs and verdicts
    train = [s.model_copy(update={"output": Message(role="assistant", content=r.output), "split": "train",
                                  "evals": {k: EvalResult(label=v.label, score=v.score, explanation=v.explanation)
                                            for k, v in r.verdicts.items()}}) for s, r in zip(train, judged, strict=True)]
    return evals, policy, scorer, train, test


def held_out(scorer, evals, policy: Policy, test: list[Sample], cache: dict) -> float:
    key = policy.digest
    if key not in cache:
        rows = scorer.score(policy, test).rows
        cache[key] = statistics.fmean(r.value(evals) for r in rows)
    return cache[key]


def one_shot(ctx: OptimizeContext, settings: SearchSettings) -> Policy:
    """One optimizer call on one minibatch of the stored feedback; no validation (the classic rewrite)."""
    rows = stored_rows(ctx.train, ctx.evals)
    batch = minibatch(rows, ctx.evals, settings.minibatch, random.Random(ctx.seed))
    cap, fmt = length_cap(ctx.policy, settings.max_growth), None
    if settings.metaprompt == "compact":  # the request the built-in optimizer makes of a small model
        msgs, fmt = compact_request(ctx.policy, ctx.evals, batch, max_chars=cap)
    else:
        msgs = update_messages(ctx.policy, ctx.evals, feedback_items(batch, ctx.evals), magnitude="large",
                               max_chars=cap)
    update, _ = ask_update(ctx.lm, ctx.budget, msgs, settings.temperature, Spend(), fmt)
    return ctx.policy.model_copy(update={"system_prompt": update.new_system_prompt}) if update else ctx.policy


def run_one(world: str, seed: int, args) -> dict:
    server = start_server(world, seed=seed, mode="subprocess")
    try:
        evals, policy, scorer, train, test = world_setup(world, server.base_url, seed, args.train, args.test)
        lm = OpenAIOptimizerLM(make_client(server.base_url, "sim", max_retries=0), "sim-optimizer")
        settings = SearchSettings(trials=3, rounds=100, minibatch=8, population=4, val_size=16)
        cache: dict = {}
        out = {"world": world, "seed": seed}

        def ctx() -> OptimizeContext:
            return OptimizeContext(policy=policy, evals=evals, train=train, scorer=scorer, lm=lm,
                                   budget=Budget(args.budget), seed=seed)

        def measured(fn):
            before = server.stats()["requests"]
            result = fn()
            return result, server.stats()["requests"] - before

        out["none"] = (held_out(scorer, evals, policy, test, cache), 0)
        c = ctx()
        rewrite, calls = measured(lambda: one_shot(c, settings))
        out["one-shot"] = (held_out(scorer, evals, rewrite, test, cache), calls)
        c = ctx()
        res, calls = measured(lambda: TextGradOptimizer(settings).optimize(c))
        by_id = {x.id: x.policy for x in res.candidates}
        best = by_id.get(res.best, policy)
        out["selfimprove"] = (held_out(scorer, evals, best, test, cache), calls)
        out["trajectory"] = [(h["calls_used"], held_out(scorer, evals, by_id.get(h["best"], policy), test, cache))
                             for h in res.history]
        from selfimprove.optimizers.gepa_adapter import GEPAOptimizer

        c = ctx()
        res, calls = measured(lambda: GEPAOptimizer(settings).optimize(c))
        best = {x.id: x.policy for x in res.candidates}.get(res.best, policy)
        out["gepa"] = (held_out(scorer, evals, best, test, cache), calls)
        return out
    finally:
        server.stop()


def calls_to_reach(trajectory: list[tuple[int, float]], target: float) -> int | None:
    for calls, score in trajectory:
        if score >= target - 1e-9:
            return calls
    return None


def drift(trajectory: list[tuple[int, float]], final: float) -> float:
    """How far the final pick fell below the best incumbent the search held before it (0 when it did not)."""
    return max([0.0] + [score - final for _, score in trajectory])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--worlds", nargs="+", default=["support_hard"])
    args = ap.parse_args(argv)
    try:
        import gepa  # noqa: F401
    except ImportError:
        print("bench_optimizer: the gepa package is not installed (pip install 'selfimprove[gepa]'); skipped")
        return 0
    started, runs = time.time(), []
    for world in args.worlds:
        for seed in range(args.seeds):
            runs.append(run_one(world, seed, args))
            r = runs[-1]
            print(f"  {world} seed {seed}: " + ", ".join(f"{m} {r[m][0]:.3f} ({r[m][1]} calls)" for m in
                                                         ("none", "one-shot", "selfimprove", "gepa"))
                  + "; selfimprove trajectory " + " ".join(f"{c}c:{s:.3f}" for c, s in r["trajectory"]), flush=True)
    methods = ("none", "one-shot", "selfimprove", "gepa")
    print(f"\nheld-out mean score (task+judge+optimizer calls; budget {args.budget} each; {args.seeds} seeds; "
          f"train {args.train}, test {args.test})")
    print(f"{'world':10} " + " ".join(f"{m:>22}" for m in methods))
    for world in args.worlds + ["all"]:
        rs = [r for r in runs if world in ("all", r["world"])]
        cells = []
        for m in methods:
            scores, calls = [r[m][0] for r in rs], [r[m][1] for r in rs]
            sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
            cells.append(f"{statistics.fmean(scores):.3f}±{sd:.3f} ({statistics.fmean(calls):.0f}c)")
        print(f"{world:10} " + " ".join(f"{c:>22}" for c in cells))
    si = statistics.fmean(r["selfimprove"][0] for r in runs)
    ge = statistics.fmean(r["gepa"][0] for r in runs)
    ratios = []
    for r in runs:
        reach = calls_to_reach(r["trajectory"], r["gepa"][0])
        ratios.append(float("inf") if reach is None else reach / max(r["gepa"][1], 1))
    reached = [x for x in ratios if x != float("inf")]
    med = statistics.median(ratios)
    print(f"\nratio 1 - selfimprove / GEPA mean held-out score at equal budget: {si / ge:.3f} "
          f"(target >= 1.05: {'OK' if si >= 1.05 * ge else 'MISSED'})")
    print(f"ratio 2 - calls for selfimprove to reach GEPA's final held-out score / GEPA's calls: median "
          f"{'never' if med == float('inf') else f'{med:.0%}'} over {len(runs)} runs ({len(reached)} reached; "
          f"per run: {', '.join('never' if x == float('inf') else f'{x:.0%}' for x in ratios)}) "
          f"(target <= 50%: {'OK' if med <= 0.5 else 'MISSED'})")
    one = statistics.fmean(r["one-shot"][0] for r in runs)
    print(f"one-shot rewrite: {one:.3f} vs selfimprove {si:.3f}, gap {si - one:+.3f}, below in "
          f"{sum(r['one-shot'][0] < r['selfimprove'][0] for r in runs)} of {len(runs)} runs "
          f"(target: gap >= 0.05: {'OK' if si - one >= 0.05 else 'MISSED'})")
    drifts = [drift(r["trajectory"], r["selfimprove"][0]) for r in runs]
    print(f"drift - best earlier incumbent minus final pick, held-out: mean {statistics.fmean(drifts):.3f}, max "
          f"{max(drifts):.3f} (per run: {', '.join(f'{d:.3f}' for d in drifts)}) "
          f"(target mean <= 0.01: {'OK' if statistics.fmean(drifts) <= 0.01 else 'MISSED'})")
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
