"""REAL MODEL benchmark: selfimprove (built-in) vs GEPA vs a one-shot rewrite at an equal call budget, on a local
llama-server (`make setup-real`): task model Qwen2.5-Coder 0.5B, optimizer Qwen2.5-Coder 1.5B, the deterministic
code evals of selfimprove.demo.local_task (`concise`: under 50 words; `plain_text`: no Markdown) as judges.

Per seed: the support world's public customer messages, split into train and a held-out test set; production is
the weak prompt's replies on train, judged by the code evals; each method learns on train only within the same
budget of LLM calls (task + optimizer calls; the code evals cost none) and its final prompt is scored on the
held-out test set. The built-in optimizer and the one-shot rewrite use the compact update request
(`[update] metaprompt = "compact"`, selfimprove/optimizers/compact.py): with the full meta-prompt every 1.5B answer
copied its scaffolding into the new prompt and the guards rejected them all. Every optimizer answer is capped at
MAX_OPTIMIZER_TOKENS. Prints each method's candidates and guard rejections, its final prompt, then the table (mean held-out score, calls, wall time) and OK/MISSED against
selfimprove >= GEPA on held-out. Slow by nature: each 1.5B optimizer call takes 30-90 s on two cores.

Usage: python benchmarks/bench_real.py [--budget 30] [--seeds 4] [--train 12] [--test 16] [--threads N] [--log F]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter

from selfimprove.core.records import EvalResult, EvalSpec, Message, Policy, Sample
from selfimprove.demo.local_task import (
    CODE_EVALS,
    OPTIMIZER_MODEL,
    TASK_MODEL,
    WORLD,
    local_servers,
    policy,
    register_code_evals,
)
from selfimprove.optimizers.base import Budget, OptimizeContext
from selfimprove.optimizers.lm import OpenAIOptimizerLM, make_client
from selfimprove.optimizers.textgrad import SearchSettings, TextGradOptimizer
from selfimprove.sim import generate_inputs

MAX_OPTIMIZER_TOKENS = 512  # every method's optimizer answers are capped alike (a small model can ramble)
METHODS = ("none", "one-shot", "selfimprove", "gepa")
LABEL = f"REAL MODEL (local: task {TASK_MODEL}, optimizer {OPTIMIZER_MODEL})"


def make_scorer(base_url: str, evals: tuple[EvalSpec, ...]):
    from selfimprove.evals.judges import JudgeEndpoint, build_judges
    from selfimprove.evaluation.replay import PolicyScorer
    from selfimprove.evaluation.scorer import ReplayScorer
    from selfimprove.llm import Ledger, OpenAIChat

    ledger = Ledger()
    llm = OpenAIChat(base_url, "SELFIMPROVE_LOCAL_MODEL_KEY", model=TASK_MODEL, ledger=ledger, concurrency=1,
                     max_retries=1, timeout=900)
    judges, _ = build_judges(evals, JudgeEndpoint(base_url=base_url, api_key="local"), cache=None, ledger=ledger)
    return ReplayScorer(PolicyScorer(llm, judges, concurrency=1, ledger=ledger), evals, ledger)


def setup(base_url: str, seed: int, n_train: int, n_test: int):
    evals = tuple(EvalSpec(name=name, kind="code") for name in CODE_EVALS)
    weak = Policy(**policy())
    scorer = make_scorer(base_url, evals)
    histories = generate_inputs(WORLD, n_train + n_test, seed=1000 + seed)
    samples = [Sample(sample_id=f"s{seed}-{i:04d}", span_id=f"sp{i}", trace_id=f"tr{i}",
                      history=tuple(Message(**m) for m in h)) for i, h in enumerate(histories)]
    random.Random(seed).shuffle(samples)
    train, test = samples[:n_train], samples[n_train:]
    judged = scorer.score(weak, train).rows  # production: the weak prompt's replies and their verdicts
    train = [s.model_copy(update={"output": Message(role="assistant", content=r.output), "split": "train",
                                  "evals": {k: EvalResult(label=v.label, score=v.score, explanation=v.explanation)
                                            for k, v in r.verdicts.items()}}) for s, r in zip(train, judged, strict=True)]
    return evals, weak, scorer, train, test


def held_out(scorer, evals, pol: Policy, test: list[Sample], cache: dict) -> float:
    if pol.digest not in cache:
        cache[pol.digest] = statistics.fmean(r.value(evals) for r in scorer.score(pol, test).rows)
    return cache[pol.digest]


def run_one(seed: int, task_url: str, optimizer_url: str, args) -> dict:
    from bench_optimizer import one_shot

    from selfimprove.optimizers.gepa_adapter import GEPAOptimizer

    evals, weak, scorer, train, test = setup(task_url, seed, args.train, args.test)
    lm = OpenAIOptimizerLM(make_client(optimizer_url, "local", timeout_s=1200, max_retries=0), OPTIMIZER_MODEL,
                           max_tokens=MAX_OPTIMIZER_TOKENS)
    settings = SearchSettings(trials=2, rounds=100, minibatch=6, population=3, val_size=6, metaprompt="compact")
    cache: dict = {}
    out: dict = {"seed": seed, "none": (held_out(scorer, evals, weak, test, cache), 0, 0.0)}

    def timed(method: str, optimize) -> tuple[float, int, float]:
        def log(message: str) -> None:  # each method's progress lines (GEPA's acceptances and rejections too)
            with open(args.log, "a") as f:
                f.write(f"[seed {seed} {method}] {message}\n")

        ctx = OptimizeContext(policy=weak, evals=evals, train=train, scorer=scorer, lm=lm,
                              budget=Budget(args.budget), seed=seed, log=log)
        started = time.monotonic()
        result = optimize(ctx)
        if not isinstance(result, Policy):
            rejected = Counter(g.name for c in result.candidates for g in c.guards if not g.passed)
            print(f"    seed {seed} {method}: {len(result.candidates)} candidate(s), "
                  f"{sum(c.passed_guards for c in result.candidates)} passed the guards"
                  + (f" (rejected by {dict(rejected)})" if rejected else ""), flush=True)
            result = {c.id: c.policy for c in result.candidates}.get(result.best, weak)
        seconds = time.monotonic() - started
        print(f"    seed {seed} {method}: final prompt {result.system_prompt!r}", flush=True)
        return held_out(scorer, evals, result, test, cache), ctx.budget.used, seconds

    out["one-shot"] = timed("one-shot", lambda c: one_shot(c, settings))
    out["selfimprove"] = timed("selfimprove", TextGradOptimizer(settings).optimize)
    out["gepa"] = timed("gepa", GEPAOptimizer(settings).optimize)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--train", type=int, default=12)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--log", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache",
                                                  "bench_real.log"), help="each method's progress lines")
    args = ap.parse_args(argv)
    try:
        import gepa  # noqa: F401
    except ImportError:
        print("bench_real: the gepa package is not installed (pip install 'selfimprove[gepa]'); skipped")
        return 0
    from selfimprove.core.errors import UsageError

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_optimizer's one-shot rewrite
    register_code_evals()
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    started, runs = time.time(), []
    try:
        with local_servers(threads=args.threads) as (task, optimizer):
            for seed in range(args.seeds):
                runs.append(run_one(seed, task.base_url, optimizer.base_url, args))
                r = runs[-1]
                print(f"  seed {seed}: " + ", ".join(f"{m} {r[m][0]:.3f} ({r[m][1]} calls, {r[m][2]:.0f} s)"
                                                     for m in METHODS), flush=True)
    except UsageError as exc:
        print(f"bench_real: {exc.message} ({exc.hint}); skipped")
        return 0
    print(f"\n{LABEL}: held-out mean score (code evals {', '.join(CODE_EVALS)}); budget {args.budget} calls each; "
          f"{args.seeds} seeds; train {args.train}, test {args.test}; load {os.getloadavg()[0]:.1f}")
    print(f"{'method':12} {'held-out':>16} {'calls':>7} {'seconds':>8}")
    for m in METHODS:
        scores = [r[m][0] for r in runs]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"{m:12} {statistics.fmean(scores):>9.3f}±{sd:.3f} {statistics.fmean(r[m][1] for r in runs):>7.0f} "
              f"{statistics.fmean(r[m][2] for r in runs):>8.0f}")
    si = statistics.fmean(r["selfimprove"][0] for r in runs)
    ge = statistics.fmean(r["gepa"][0] for r in runs)
    print(f"\nselfimprove {si:.3f} vs GEPA {ge:.3f} on held-out at equal budget "
          f"(target selfimprove >= GEPA: {'OK' if si >= ge else 'MISSED'})")
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
