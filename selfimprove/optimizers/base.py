"""The optimizer's boundary: what it sees (scored samples, eval definitions), what it calls (a Scorer, an LM), what
it spends (a call Budget), and what it returns (Candidates).

An optimizer never sees the simulator or the held-out split: only train samples, their outputs, the judges' verdicts
and explanations, and the eval specs. Invariants every optimizer keeps:
- the budget is never exceeded: every LLM call is reserved before it is made (`Budget.reserve` raises
  `BudgetExhausted` and nothing is spent);
- one bad sample or one failed call is data (an `error` on the row, a score of 0), never a crash;
- every proposed policy becomes a Candidate, guarded; a rejected one is kept with its reasons.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from selfimprove.core.records import Candidate, EvalSpec, Policy, Sample


class BudgetExhausted(Exception):
    """Raised by `Budget.reserve` when a call would exceed the budget; nothing was spent."""


class Budget:
    """A hard cap on LLM calls (task, judge and optimizer calls alike), shared by everything an update does.

    `reserve(n)` before making up to n calls (raises BudgetExhausted, spending nothing, if they might not fit);
    `settle(reserved, used)` afterwards returns what was not used (a cache hit costs no call). Retries of failed
    requests may make `used` exceed the reservation: that is recorded (`overrun`), and the LLM layer's ledger,
    given the same limit, is the hard stop for them.
    """

    def __init__(self, max_calls: int):
        self.max_calls = int(max_calls)
        self.used = 0
        self.reserved = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.overrun = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return self.max_calls - self.used - self.reserved

    def can_afford(self, n: int) -> bool:
        return n <= self.remaining

    def reserve(self, n: int) -> int:
        with self._lock:
            if n > self.max_calls - self.used - self.reserved:
                raise BudgetExhausted(f"{n} more calls would exceed the budget of {self.max_calls} "
                                      f"({self.used} used, {self.reserved} reserved)")
            self.reserved += n
            return n

    def settle(self, reserved: int, used: int, tokens: int = 0, cost_usd: float = 0.0) -> None:
        with self._lock:
            self.overrun += max(0, used - reserved)
            self.reserved -= reserved
            self.used += used
            self.tokens += tokens
            self.cost_usd += cost_usd

    def snapshot(self) -> dict[str, Any]:
        return {"max_calls": self.max_calls, "used": self.used, "overrun": self.overrun, "tokens": self.tokens,
                "cost_usd": round(self.cost_usd, 6)}


@dataclass(frozen=True)
class Verdict:
    """One eval's verdict on one replayed (or stored) output."""

    score: float | None
    label: str | None = None
    explanation: str | None = None


@dataclass(frozen=True)
class ScoredSample:
    """A policy's output on one sample, with every eval's verdict. `error` set means the call failed."""

    sample_id: str
    history: tuple[Any, ...]
    output: str
    verdicts: dict[str, Verdict]
    error: str | None = None

    def value(self, evals: Sequence[EvalSpec], weights: dict[str, float] | None = None) -> float:
        """The sample's reward in [0, 1] (core.scores.reward: normalised scores averaged over evals with their
        weights, a missing verdict counted as 0, so a candidate never gains by making calls fail)."""
        from selfimprove.core.scores import reward

        return reward({name: v.score for name, v in self.verdicts.items()}, evals, weights)

    def failed_evals(self, evals: Sequence[EvalSpec], stored: Sequence[EvalSpec] = ()) -> list[str]:
        """Names of the evals this sample did not fully pass (a missing verdict counts as failed), then the
        `stored` (feedback-only) evals whose verdict is present and not a full pass (core.scores)."""
        from selfimprove.core.scores import normalize_or_worst

        def below(spec: EvalSpec) -> bool:
            v = self.verdicts.get(spec.name)
            return normalize_or_worst(None if v is None else v.score, spec) < 1.0

        return [spec.name for spec in evals if below(spec)] + [
            spec.name for spec in stored if spec.name in self.verdicts and below(spec)]


@dataclass
class ScoreBatch:
    rows: list[ScoredSample]
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class Scorer(Protocol):
    """Replays a policy on samples and judges the outputs with the checkpoint's evals.

    `calls_per_sample` is the most LLM calls scoring one sample may take (1 task call + one per LLM eval), so
    that callers can reserve a budget first. Never raises for one bad sample: it comes back with `error` set.
    """

    calls_per_sample: int

    def score(self, policy: Policy, samples: Sequence[Sample]) -> ScoreBatch: ...


@dataclass(frozen=True)
class LMReply:
    text: str
    calls: int = 1
    tokens: int = 0
    cost_usd: float = 0.0


class OptimizerLM(Protocol):
    """The optimizer model: one chat-completions call, optionally with a `response_format`. Raises on failure."""

    model: str

    def complete(self, messages: list[dict[str, Any]], *, response_format: dict[str, Any] | None = None,
                 temperature: float | None = None) -> LMReply: ...


@dataclass
class OptimizeContext:
    """Everything an optimizer may see. `train` never contains a test sample. `evals` are replayed and score
    every candidate; `stored_evals` cannot be replayed (people's labels, an eval whose spec was not recorded):
    their production verdicts on train are feedback only (free), and never score a candidate."""

    policy: Policy
    evals: tuple[EvalSpec, ...]
    train: list[Sample]
    scorer: Scorer
    lm: OptimizerLM
    budget: Budget
    primary_eval: str | None = None
    settings: Any = None  # selfimprove.config.models.Update
    seed: int = 0
    focus: str | None = None  # a failure-cluster id to target
    prices: dict[str, Any] = field(default_factory=dict)  # model -> {"input", "output"} $/Mtok, for tuning
    log: Any = None  # callable(str) for progress lines
    stored_evals: tuple[EvalSpec, ...] = ()
    embed: Any = None  # callable(texts) -> n x d matrix: the configured embeddings endpoint, for failure modes
    weights: dict[str, float] = field(default_factory=dict)  # eval -> weight in the reward (absent: 1)
    guardrails: tuple[str, ...] = ()  # evals a new incumbent may not regress on (search.Population.regressions)


@dataclass
class OptimizeResult:
    candidates: list[Candidate]
    best: str | None
    val_scores: dict[str, float] = field(default_factory=dict)
    val_ids: list[str] = field(default_factory=list)
    taxonomy: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # candidate id -> role, round, val_mean, ...


class Optimizer(Protocol):
    """Proposes candidate policies from the context's feedback within its budget."""

    name: str

    def optimize(self, ctx: OptimizeContext) -> OptimizeResult: ...
