"""Helpers for the optimizer tests: a simulated world's checkpoint (production samples judged by the simulated
judge) and a Scorer that replays a policy and judges the outputs, both through the real openai SDK over HTTP.

`SimReplayScorer` really implements the `Scorer` protocol (task call + one judge call per eval, JSON-schema
structured verdicts); the product's own replay scorer is `selfimprove.evaluation.scorer`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selfimprove.core.records import EvalResult, EvalSpec, Message, Policy, Sample
from selfimprove.optimizers.base import LMReply, ScoreBatch, ScoredSample, Verdict
from selfimprove.sim import default_policy, generate_inputs, world_evals


def client(base_url: str):
    import openai

    return openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)


def eval_specs(world: str) -> tuple[EvalSpec, ...]:
    return tuple(EvalSpec(name=e["name"], template=e["template"], choices=e["choices"], judge_model="sim-judge",
                          direction=e.get("direction", "maximize")) for e in world_evals(world))


def start_policy(world: str) -> Policy:
    return Policy(**default_policy(world))


class SimReplayScorer:
    def __init__(self, base_url: str, evals: Sequence[EvalSpec], workers: int = 16):
        self.client, self.evals, self.workers = client(base_url), tuple(evals), workers
        self.calls_per_sample = 1 + len(self.evals)

    def _judge(self, spec: EvalSpec, inp: str, out: str) -> tuple[Verdict, int]:
        schema = {"type": "object", "properties": {
            "explanation": {"type": "string"}, "label": {"type": "string", "enum": list(spec.choices)}},
            "required": ["explanation", "label"], "additionalProperties": False}
        r = self.client.chat.completions.create(
            model="sim-judge", temperature=0.0,
            messages=[{"role": "user", "content": spec.template.replace("{input}", inp).replace("{output}", out)}],
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}})
        data = json.loads(r.choices[0].message.content)
        return Verdict(spec.choices.get(data["label"]), data["label"], data["explanation"]), r.usage.total_tokens

    def _one(self, policy: Policy, sample: Sample) -> tuple[ScoredSample, int, int]:
        calls = tokens = 0
        try:
            r = self.client.chat.completions.create(messages=policy.messages_for(sample.history), **policy.params())
            calls, tokens = 1, r.usage.total_tokens
            out = r.choices[0].message.content or ""
            inp = next(m.text() for m in reversed(sample.history) if m.role == "user")
            verdicts = {}
            for spec in self.evals:
                verdicts[spec.name], t = self._judge(spec, inp, out)
                calls, tokens = calls + 1, tokens + t
            return ScoredSample(sample.sample_id, sample.history, out, verdicts), calls, tokens
        except Exception as exc:  # noqa: BLE001 - one failed sample is data
            return ScoredSample(sample.sample_id, sample.history, "", {}, error=str(exc)), max(calls, 1), tokens

    def score(self, policy: Policy, samples: Sequence[Sample]) -> ScoreBatch:
        with ThreadPoolExecutor(self.workers) as pool:
            done = list(pool.map(lambda s: self._one(policy, s), samples))
        return ScoreBatch(rows=[d[0] for d in done], calls=sum(d[1] for d in done), tokens=sum(d[2] for d in done))


def production_samples(base_url: str, world: str, n: int, seed: int = 0, *, injection_rate: float = 0.0,
                       policy: Policy | None = None, split: str = "train") -> list[Sample]:
    """`n` production calls of the world's default policy, judged: what a checkpoint's train split holds."""
    policy = policy or start_policy(world)
    histories = generate_inputs(world, n, seed, injection_rate=injection_rate)
    stubs = [Sample(sample_id=f"{split}-{seed}-{i:04d}", span_id=f"sp{i}", trace_id=f"tr{i}",
                    history=tuple(Message(**m) for m in h), split=split) for i, h in enumerate(histories)]
    batch = SimReplayScorer(base_url, eval_specs(world)).score(policy, stubs)
    out = []
    for stub, row in zip(stubs, batch.rows, strict=True):
        evals = {k: EvalResult(label=v.label, score=v.score, explanation=v.explanation) for k, v in row.verdicts.items()}
        out.append(stub.model_copy(update={"output": Message(role="assistant", content=row.output), "evals": evals,
                                           "policy_digest": policy.digest}))
    return out


class CountingLM:
    """Wraps an OptimizerLM and keeps every request it was sent (to inspect meta-prompts in tests)."""

    def __init__(self, inner: Any):
        self.inner, self.model, self.requests = inner, inner.model, []

    def complete(self, messages, *, response_format=None, temperature=None) -> LMReply:
        self.requests.append(messages)
        return self.inner.complete(messages, response_format=response_format, temperature=temperature)


def replay_scorer(base_url: str, evals: Sequence[EvalSpec], cache_dir=None):
    """The product's ReplayScorer (replay through OpenAIChat, phoenix-evals judges) on the simulator, with its own
    ledger; `cache_dir` None means no cache (every call is really made)."""
    from selfimprove.evals.judges import JudgeEndpoint, build_judges
    from selfimprove.evaluation.replay import PolicyScorer
    from selfimprove.evaluation.scorer import ReplayScorer
    from selfimprove.llm import CallCache, Ledger, OpenAIChat

    ledger = Ledger()
    cache = CallCache(cache_dir) if cache_dir else None
    llm = OpenAIChat(base_url, model="sim-small", cache=cache, ledger=ledger, concurrency=16, max_retries=0)
    judges, _ = build_judges(evals, JudgeEndpoint(base_url=base_url, api_key="sim"), cache=cache, ledger=ledger)
    return ReplayScorer(PolicyScorer(llm, judges, concurrency=16, ledger=ledger), evals, ledger)


def critique_ab(world: str = "support", seeds: Sequence[int] = (0, 1, 2), budget: int = 400, n_train: int = 60,
                n_test: int = 100, **knobs: Any) -> list[dict[str, Any]]:
    """The built-in optimizer with and without `critique` at the same call budget (the benchmark's setup: the
    same world, seed, train/test split, models and budget): per seed, the validation mean of the best candidate,
    its held-out (test) mean, the calls used and the critiques made. The test split is never shown to the optimizer."""
    import statistics
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_optimizer import world_setup

    from selfimprove.optimizers.base import Budget, OptimizeContext
    from selfimprove.optimizers.lm import OpenAIOptimizerLM
    from selfimprove.optimizers.textgrad import SearchSettings, TextGradOptimizer
    from selfimprove.sim import start_server

    out = []
    for seed in seeds:
        server = start_server(world, seed=seed, **knobs)
        try:
            evals, policy, scorer, train, test = world_setup(world, server.base_url, seed, n_train, n_test)
            lm = OpenAIOptimizerLM(client(server.base_url), "sim-optimizer")
            held: dict[str, float] = {}
            for critique in (False, True):
                ctx = OptimizeContext(policy=policy, evals=evals, train=train, scorer=scorer, lm=lm,
                                      budget=Budget(budget), seed=seed)
                settings = SearchSettings(trials=3, rounds=100, minibatch=8, population=4, val_size=16,
                                          critique=critique)
                before = server.stats()["requests"]
                res = TextGradOptimizer(settings).optimize(ctx)
                calls = server.stats()["requests"] - before
                best = {c.id: c.policy for c in res.candidates}.get(res.best, policy)
                if best.digest not in held:
                    held[best.digest] = statistics.fmean(r.value(evals) for r in scorer.score(best, test).rows)
                seed_id = next(k for k, v in res.info.items() if v.get("role") == "seed")
                out.append({"seed": seed, "critique": critique, "calls": calls, "rounds": len(res.history),
                            "critiques": res.history[-1].get("critiques", 0) if res.history else 0,
                            "val": res.val_scores.get(res.best or seed_id), "test": held[best.digest]})
        finally:
            server.stop()
    return out


if __name__ == "__main__":  # python tests/optimizer_sim.py [budget] [knob=value ...]: the critique A/B
    import statistics
    import sys

    args = sys.argv[1:]
    kn = {k: float(v) for k, v in (a.split("=") for a in args if "=" in a)}
    rows = critique_ab(budget=int(next((a for a in args if "=" not in a), 400)), **kn)
    for r in rows:
        print(r)
    for flag in (False, True):
        sel = [r for r in rows if r["critique"] is flag]
        print(f"critique={flag}: val {statistics.fmean(r['val'] for r in sel):.3f}  "
              f"test {statistics.fmean(r['test'] for r in sel):.3f}  calls {statistics.fmean(r['calls'] for r in sel):.0f}")
