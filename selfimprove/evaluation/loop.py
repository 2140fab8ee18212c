"""The sequential evaluation loop: clusters in a seeded-random order, in batches, a sequential test per candidate.

Samples are ordered cluster by cluster (a cluster's samples together, clusters shuffled by the seed), so the
sequential test (core.stats.sequential) sees whole clusters. Each batch scores the baseline (unless stored) and
every still-undecided candidate on the next `batch_size` samples, all calls at once under the scorer's one
concurrency limit. After the batch, each candidate's test on the primary eval takes the batch's finished clusters
in order; a candidate whose test has decided gets no more samples,
and the loop ends when no candidate is left undecided or the samples run out. A systemic failure (budget used up,
endpoint down) ends the loop after cancelling the batch in flight: rows of finished batches are kept, and every
finished call is in the cache, so a re-run resumes without paying twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.core.records import EvalSpec, Policy, Sample
from selfimprove.core.scores import normalize
from selfimprove.core.split import seeded_order
from selfimprove.evaluation.report import BASELINE
from selfimprove.llm.accounting import BudgetExceeded


@dataclass
class Arm:
    """One candidate under test: its policy, its sequential test (a SequentialMonitor) and the sample ids it was
    scored on (in order)."""

    id: str
    policy: Policy
    test: Any
    used: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.test.decision == "continue"


@dataclass
class LoopOutcome:
    rows: list[dict[str, Any]]
    baseline_ids: list[str]
    stopped: str  # "decided" | "exhausted" | "budget" | "unavailable"
    message: str | None = None


def cluster_of(sample: Sample, cluster_by: str = "trace") -> str:
    """The sample's unit of independence: its trace (default) or itself."""
    return sample.trace_id if cluster_by == "trace" else sample.sample_id


def cluster_order(samples: Sequence[Sample], seed: int, cluster_by: str = "trace") -> list[Sample]:
    """The samples cluster by cluster: clusters in a random order fixed by `seed` (independent of the order on
    disk; core.split.seeded_order), a cluster's samples together in conversation order (step, then id)."""
    groups: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (s.step, s.sample_id)):
        groups.setdefault(cluster_of(s, cluster_by), []).append(s)
    return [s for k in seeded_order(groups, seed) for s in groups[k]]


class PriorityLimit:
    """A semaphore whose waiters are served lowest priority first (FIFO within a priority): the next batch only
    gets the slots the current batch leaves idle. `at(priority)` is the async context manager for one call."""

    def __init__(self, slots: int):
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._seq = 0

    def at(self, priority: int) -> _Slot:
        return _Slot(self, priority)

    async def acquire(self, priority: int) -> None:
        import heapq

        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled at once: pass the slot on
            raise

    def release(self) -> None:
        import heapq

        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


class _Slot:
    def __init__(self, limit: PriorityLimit, priority: int):
        self.limit, self.priority = limit, priority

    async def __aenter__(self) -> None:
        await self.limit.acquire(self.priority)

    async def __aexit__(self, *exc: object) -> None:
        self.limit.release()


def _warm_report_imports() -> None:
    """Import scipy.stats (the report's paired statistics, ~0.5 s in a fresh process) on a thread while the loop
    mostly waits on the network, instead of after the last call. The import lock makes a later import wait for
    this one; a failure here is ignored (the report's own import raises it)."""
    import contextlib
    import sys
    import threading

    if "scipy.stats" in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(Exception):  # the report's own import reports a failure
            import scipy.stats  # noqa: F401

    threading.Thread(target=load, name="selfimprove-warm-imports", daemon=True).start()


async def _cancel(tasks: Sequence[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_sequential(scorer: Any, *, baseline: Policy | None, stored: dict[str, list[dict[str, Any]]] | None,
                         arms: list[Arm], order: Sequence[Sample], batch_size: int, primary: EvalSpec,
                         on_batch: Callable[[int, int, list[Arm]], None] | None = None,
                         cluster_by: str = "trace", prefetch: bool = True) -> LoopOutcome:
    """Score `order` batch by batch until every arm's SPRT has decided. `baseline` None means `stored` holds the
    baseline's rows per sample id (production outputs and scores).

    The next batch is started at once at a lower priority, so it fills the slots the current batch leaves idle
    (its calls never delay the current batch's); an arm that decides drops its calls of the next batch (those
    already finished are cached but not used: the report only counts the batches up to each arm's decision).
    `prefetch` False starts a batch only when the one before it is decided: the Batch API's waves (docs/batch.md),
    where a started call cannot be taken back.
    """
    from selfimprove.core.errors import SelfimproveError

    _warm_report_imports()
    batches = [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    limit = PriorityLimit(scorer.concurrency)
    started: dict[int, dict[str, list[asyncio.Task]]] = {}

    def start(k: int) -> None:
        if k >= len(batches) or k in started:
            return
        labels = [(a.id, a.policy) for a in arms if a.active]
        if labels and baseline is not None:
            labels.insert(0, (BASELINE, baseline))
        started[k] = {label: [asyncio.ensure_future(scorer.ascore_sample(pol, s, label=label, limit=limit.at(k)))
                              for s in batches[k]] for label, pol in labels}

    rows: list[dict[str, Any]] = []
    baseline_ids: list[str] = []
    try:
        for k, batch in enumerate(batches):
            active = [a for a in arms if a.active]
            if not active:
                return LoopOutcome(rows, baseline_ids, "decided")
            start(k)
            if prefetch:
                start(k + 1)
            wanted = ([BASELINE] if baseline is not None else []) + [a.id for a in active]
            try:
                results = [await asyncio.gather(*started[k][label]) for label in wanted]
            except SelfimproveError as exc:
                kind = "budget" if isinstance(exc, BudgetExceeded) else "unavailable"
                return LoopOutcome(rows, baseline_ids, kind, exc.message)
            batch_rows = [r for per_label in results for rs in per_label for r in rs]
            if baseline is None:
                batch_rows += [r for s in batch for r in (stored or {}).get(s.sample_id, [])]
            rows += batch_rows
            baseline_ids += [s.sample_id for s in batch]
            primary_score = {(r["policy"], r["sample_id"]): r["score"] for r in batch_rows
                             if r["eval"] == primary.name}
            following = batches[k + 1][0] if k + 1 < len(batches) else None
            open_cluster = cluster_of(batch[-1], cluster_by) if following is not None and \
                cluster_of(following, cluster_by) == cluster_of(batch[-1], cluster_by) else None
            for arm in active:
                for s in batch:
                    arm.used.append(s.sample_id)
                    b = normalize(primary_score.get((BASELINE, s.sample_id)), primary)
                    c = normalize(primary_score.get((arm.id, s.sample_id)), primary)
                    if b is not None and c is not None:
                        arm.test.add(c - b, cluster_of(s, cluster_by))
                arm.test.check(open_cluster)  # the batch's pairs after the stop still count in the CI
            nxt = started.get(k + 1, {})
            for arm in active:
                if not arm.active and arm.id in nxt:
                    await _cancel(nxt.pop(arm.id))
            if not any(a.active for a in arms) and BASELINE in nxt:
                await _cancel(nxt.pop(BASELINE))
            if on_batch:
                on_batch(sum(len(b) for b in batches[:k + 1]), len(order), arms)
        return LoopOutcome(rows, baseline_ids, "decided" if not any(a.active for a in arms) else "exhausted")
    finally:
        # every task, finished ones too: a call the budget refused ended its task with BudgetExceeded, and an
        # exception nobody retrieves is printed as "Task exception was never retrieved" when the loop closes
        await _cancel([t for per in started.values() for ts in per.values() for t in ts])


def stored_baseline_rows(samples: Sequence[Sample], evals: Sequence[EvalSpec], policy: Policy,
                         prices: Any) -> dict[str, list[dict[str, Any]]]:
    """The production outputs and verdicts of `samples` as baseline rows (the `stored` baseline)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        p, c = s.prompt_tokens or 0, s.completion_tokens or 0
        text = s.output.output_text() if s.output else None
        gen_error = None if s.output else "no stored output"
        rows = []
        for spec in evals:
            r = s.evals.get(spec.name)
            rows.append({"sample_id": s.sample_id, "policy": BASELINE, "policy_digest": s.policy_digest or policy.digest,
                         "eval": spec.name, "label": r.label if r else None, "score": r.score if r else None,
                         "explanation": r.explanation if r else None,
                         "error": None if r and (r.score is not None or (spec.label_only and r.label is not None))
                         else "no stored verdict",
                         "output": text, "gen_error": gen_error, "tokens": 0, "cost_usd": 0.0, "latency_ms": None,
                         "cached": True, "gen_tokens": p + c, "gen_cost_usd": prices.cost(policy.model, p, c),
                         "gen_latency_ms": s.latency_ms, "gen_cached": True})
        out[s.sample_id] = rows
    return out
