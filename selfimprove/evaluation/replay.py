"""Replay a policy on samples and judge the outputs: the scoring that `evaluate` and `update` share.

- `agenerate(policy, sample, llm)`: one task call for a sample
  (`policy.messages_for(sample.history, sample.variables)` with `policy.params()`: a template is rendered with
  each sample's own variables), through the LLM layer (cache, ledger, retries); a failed call is a `Generation`
  with `error`. A sample without the variables the policy's template needs stops the replay before any call
  (`require_renderable`, a UsageError): a literal placeholder is never sent.
- `PolicyScorer`: the task model, the judges and one concurrency limit for both, built once per run folder
  (`PolicyScorer.from_config`) so repeated scoring shares the call cache and its HTTP pools.
- `score_policy(policy, samples, evals, scorer=...)`: replay + every judge -> a DataFrame with one row per
  sample × eval (columns `RESULT_COLUMNS`). Never raises for one failed call or judgement; raises only for a
  systemic failure (BudgetExceeded, LLMUnavailable). Calling it again for the same policy and samples costs
  nothing: every finished call is in the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfimprove.core.records import EvalSpec, Policy, Sample
from selfimprove.llm.run import run_sync

RESULT_COLUMNS = ["sample_id", "policy", "policy_digest", "eval", "label", "score", "explanation", "error",
                  "output", "gen_error", "tokens", "cost_usd", "latency_ms", "cached", "gen_tokens",
                  "gen_cost_usd", "gen_latency_ms", "gen_cached"]

Progress = Callable[[int, int], None]  # (finished, total)


@dataclass(frozen=True)
class Generation:
    """A policy's replayed output on one sample (`output` None and `error` set when the call failed)."""

    sample_id: str
    output: str | None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    cached: bool = False



def require_renderable(policy: Policy, samples: Sequence[Sample]) -> None:
    """Raise UsageError when `policy` is a template that some samples cannot fill (their variables are missing),
    or not a valid template at all; nothing is sent then."""
    from selfimprove.core.errors import UsageError
    from selfimprove.core.templates import TemplateError

    if policy.template_format is None:
        return
    try:
        needed = policy.variables
    except TemplateError as exc:
        raise UsageError(f"policy {policy.digest[7:19]} is not a valid {policy.template_format} template: {exc}",
                         hint="fix the prompt template; a candidate like this should have failed its guards") from exc
    lacking = [(s.sample_id, sorted(needed - set(s.variables or {}))) for s in samples
               if not needed <= set(s.variables or {})]
    if lacking:
        sid, missing = lacking[0]
        raise UsageError(f"{len(lacking)} of {len(samples)} samples lack variables policy {policy.digest[7:19]}'s "
                         f"template needs (e.g. sample {sid}: {', '.join(missing)}); replaying them would send a "
                         "literal placeholder", hint="re-run `selfimprove snapshot` (it keeps each call's variables "
                         "and counts calls without them), or check the template's variable names")


async def agenerate(policy: Policy, sample: Sample, llm: Any, limit: asyncio.Semaphore | None = None) -> Generation:
    messages = policy.messages_for(sample.history, sample.variables)  # TemplateError before anything is sent

    async def call() -> Any:
        return await llm.complete(messages, **policy.params())

    if limit is None:
        res = await call()
    else:
        async with limit:
            res = await call()
    if res.error:
        return Generation(sample.sample_id, None, error=res.error, latency_ms=res.latency_ms)
    from selfimprove.evals.judges import judged_output_text

    return Generation(sample.sample_id, judged_output_text(res.message, res.text), tokens=res.usage.total_tokens,
                      cost_usd=res.cost, latency_ms=res.latency_ms, cached=res.cached)



BATCH_CONCURRENCY = 1_000_000  # in batch mode nothing limits the calls in flight: they wait for their batch


def batch_clients(cfg: Any, endpoints: Sequence[Any], cache: Any, journal: str | Path,
                  on_event: Callable[[str], None] | None) -> dict[str, Any]:
    """{base_url: BatchClient} for the given config endpoints (one client per base_url), on the run's journal."""
    from selfimprove.llm import resolve_api_key
    from selfimprove.llm.batch import BatchClient

    b = cfg.llm.batch
    out: dict[str, Any] = {}
    for ep in endpoints:
        base = ep.base_url or "https://api.openai.com/v1"
        if base not in out:
            out[base] = BatchClient(base, resolve_api_key(base, ep.api_key_env), journal, cache=cache,
                                    poll_s=b.poll_s, gather_s=b.gather_s, max_retries=b.max_retries,
                                    timeout_s=ep.timeout_s, on_event=on_event)
    return out


class PolicyScorer:
    """Task model + judges + one concurrency limit (task and judge calls together) for repeated scoring."""

    def __init__(self, llm: Any, judges: dict[str, Any], *, concurrency: int = 32, ledger: Any = None,
                 skipped: dict[str, str] | None = None, judge_endpoint: Any = None):
        self.llm, self.judges, self.concurrency, self.ledger = llm, judges, concurrency, ledger
        self.skipped = dict(skipped or {})
        self.judge_endpoint = judge_endpoint
        self._limit: tuple[Any, asyncio.Semaphore] | None = None

    @classmethod
    def from_config(cls, cfg: Any, *, cache_dir: str | Path, evals: Sequence[EvalSpec], concurrency: int | None = None,
                    budget: Any = None, ledger: Any = None, batch_dir: str | Path | None = None,
                    on_event: Callable[[str], None] | None = None) -> PolicyScorer:
        """Build from a TargetConfig: the task endpoint (`llm.task`), the judge endpoint (`llm.judge` if set, else
        the task endpoint with each spec's judge model), prices (`llm.prices`) and the run's cache folder. With
        `batch_dir` (the run's batch journal) task and judge calls go through the Batch API (`llm.batch`), with no
        concurrency limit: every call of a wave waits for its batch at once."""
        from selfimprove.evals.judges import JudgeEndpoint, build_judges
        from selfimprove.llm import CallCache, Ledger, OpenAIChat, resolve_api_key

        conc = BATCH_CONCURRENCY if batch_dir is not None else concurrency or cfg.evaluate.concurrency
        ledger = ledger or Ledger(cfg.llm.prices, budget)
        cache = CallCache(cache_dir)
        task = cfg.llm.task
        judge_cfg = cfg.llm.judge or task
        base = judge_cfg.base_url or "https://api.openai.com/v1"
        batches = batch_clients(cfg, [task, judge_cfg], cache, batch_dir, on_event) if batch_dir is not None else {}
        llm = OpenAIChat.from_endpoint(task, model=task.model or "unset", concurrency=conc, cache=cache,
                                       ledger=ledger, batch=batches.get(task.base_url or "https://api.openai.com/v1"))
        endpoint = JudgeEndpoint(base_url=base, api_key=resolve_api_key(base, judge_cfg.api_key_env),
                                 model=cfg.llm.judge.model if cfg.llm.judge else None,
                                 max_retries=judge_cfg.max_retries, timeout_s=judge_cfg.timeout_s,
                                 rate_limit_wait_s=judge_cfg.rate_limit_wait_s)
        judges, skipped = build_judges(evals, endpoint, cache=cache, ledger=ledger,
                                       max_connections=conc if batch_dir is None else 32, batch=batches.get(base))
        return cls(llm, judges, concurrency=conc, ledger=ledger, skipped=skipped, judge_endpoint=endpoint)

    def limit(self) -> asyncio.Semaphore:
        """The shared limit of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self.concurrency))
        return self._limit[1]

    async def ascore_sample(self, policy: Policy, sample: Sample, *, label: str, evals: Sequence[str] | None = None,
                            limit: Any = None) -> list[dict[str, Any]]:
        """Rows (one per eval) for one sample: generate, then judge with every eval concurrently. `limit` (an
        async context manager, default the scorer's shared semaphore) bounds each call."""
        from selfimprove.evals.judges import JudgeItem, Judgement

        limit = limit if limit is not None else self.limit()
        gen = await agenerate(policy, sample, self.llm, limit)
        names = [n for n in (evals or list(self.judges)) if n in self.judges]
        item = JudgeItem(sample.sample_id, sample.history, gen.output, sample)

        async def one(name: str) -> Judgement:
            if gen.output is None:
                return Judgement(sample.sample_id, name, error="no output to judge (generation failed)")
            async with limit:
                return await self.judges[name].judge_one(item)

        verdicts = await asyncio.gather(*(one(n) for n in names))
        return [result_row(sample.sample_id, label, policy.digest, gen, j) for j in verdicts]

    async def ascore(self, policy: Policy, samples: Sequence[Sample], *, label: str | None = None,
                     evals: Sequence[str] | None = None, on_progress: Progress | None = None) -> list[dict[str, Any]]:
        require_renderable(policy, samples)
        done = 0

        async def one(s: Sample) -> list[dict[str, Any]]:
            nonlocal done
            rows = await self.ascore_sample(policy, s, label=label or policy.digest, evals=evals)
            done += 1
            if on_progress:
                on_progress(done, len(samples))
            return rows

        per_sample = await asyncio.gather(*(one(s) for s in samples))
        return [r for rows in per_sample for r in rows]


def result_row(sample_id: str, label: str, policy_digest: str, gen: Generation, j: Any) -> dict[str, Any]:
    return {"sample_id": sample_id, "policy": label, "policy_digest": policy_digest, "eval": j.eval,
            "label": j.label, "score": j.score, "explanation": j.explanation,
            "error": j.error if gen.error is None else f"generation failed: {gen.error}",
            "output": gen.output, "gen_error": gen.error, "tokens": j.tokens, "cost_usd": j.cost_usd,
            "latency_ms": j.latency_ms, "cached": j.cached, "gen_tokens": gen.tokens, "gen_cost_usd": gen.cost_usd,
            "gen_latency_ms": gen.latency_ms, "gen_cached": gen.cached}


def rows_to_frame(rows: Sequence[dict[str, Any]]) -> Any:
    """Result rows as a DataFrame with `RESULT_COLUMNS`, sorted by (policy, sample_id, eval)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    for col in ("score", "cost_usd", "latency_ms", "gen_cost_usd", "gen_latency_ms"):
        frame[col] = frame[col].astype("float64")
    for col in ("tokens", "gen_tokens"):
        frame[col] = frame[col].fillna(0).astype("int64")
    for col in ("cached", "gen_cached"):
        frame[col] = frame[col].fillna(False).astype(bool)
    return frame.sort_values(["policy", "sample_id", "eval"], kind="stable").reset_index(drop=True)


def score_policy(policy: Policy, samples: Sequence[Sample], evals: Sequence[EvalSpec] | Sequence[str] | None = None,
                 *, scorer: PolicyScorer, label: str | None = None, on_progress: Progress | None = None) -> Any:
    """Replay `policy` on `samples` and judge each output with `evals` (default: every judge of `scorer`).

    Returns a DataFrame (`RESULT_COLUMNS`, one row per sample × eval, `policy` = `label` or the policy digest).
    A failed generation gives rows with `gen_error` and `error` set and no score; a failed judgement a row with
    `error`. Build `scorer` once per run (`PolicyScorer.from_config(cfg, cache_dir=run.path / "cache/llm",
    evals=checkpoint.evals)`): calls already made are answered from the cache for free.
    """
    names = None if evals is None else [e.name if isinstance(e, EvalSpec) else e for e in evals]
    rows = run_sync(scorer.ascore(policy, samples, label=label, evals=names, on_progress=on_progress))
    return rows_to_frame(rows)
