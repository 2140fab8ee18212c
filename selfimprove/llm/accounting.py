"""Prices, budgets and the ledger of LLM calls: what was sent, what it cost, what the cache saved.

The ledger is shared by every caller in a process (our `OpenAIChat` and phoenix-evals' judges both go through
`httpx_cache`), and is thread-safe because phoenix-evals' sync path calls from worker threads.

Budget guarantee: before each request is sent, the ledger *reserves* its worst case — one call, prompt
tokens bounded by the UTF-8 size of the request's messages (a byte-level BPE token covers at least one byte;
the JSON keys and quotes more than cover the per-message overhead), completion tokens bounded by the
request's `max_completion_tokens`/`max_tokens` (or `Budget.assumed_completion_tokens` when the request sets
no limit) — and refuses with `BudgetExceeded` if spent + in flight + that worst case would pass a limit.
After the response the reservation is replaced by the actual usage. A request that fits the budget only once
the calls in flight have settled waits for them. A request that goes to a Batch API (the caching transport's
inner transport sends batches) is reserved at the batch price it will be booked at, so `--batch` fits twice
the calls into the same dollar budget, and the guarantee holds as before. So the totals never pass a limit when requests set a
max_tokens; near the end, the worst-case reservation may refuse a call that would in fact have fit.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from selfimprove.core.canonical import canonical_json
from selfimprove.core.errors import SelfimproveError


class BudgetExceeded(SelfimproveError):
    """A call was refused before it was sent because it could take a budget past its limit."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint or "raise the budget (--max-calls / --max-usd) or evaluate fewer samples")
        self.partial: list[Any] | None = None  # run_many attaches the results finished before the refusal


class Budget(BaseModel):
    """Limits on what the ledger may spend; None means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_calls: int | None = None
    max_tokens: int | None = None
    max_usd: float | None = None
    assumed_completion_tokens: int = 4096  # worst case reserved when a request sets no max_tokens


class PriceTable:
    """US dollars per million tokens, by model: `{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}`.

    Values may also be objects with `.input`/`.output` (the config's `Price`). A call answered through a Batch API
    costs `batch_input`/`batch_output` when given, else half the price (OpenAI's batch discount). An unknown model
    costs 0.0 and is listed by `unpriced`; a dollar budget refuses calls to a model it cannot price.
    """

    BATCH_DISCOUNT = 0.5

    def __init__(self, prices: Mapping[str, Any] | None = None):
        self._prices: dict[str, tuple[float, float]] = {}
        self._batch: dict[str, tuple[float, float]] = {}
        for model, p in (prices or {}).items():
            get = p.get if isinstance(p, Mapping) else lambda name, p=p: getattr(p, name, None)
            inp, out = float(get("input")), float(get("output"))
            self._prices[model] = (inp, out)
            b_in, b_out = get("batch_input"), get("batch_output")
            self._batch[model] = (inp * self.BATCH_DISCOUNT if b_in is None else float(b_in),
                                  out * self.BATCH_DISCOUNT if b_out is None else float(b_out))

    def knows(self, model: str) -> bool:
        return model in self._prices

    def unpriced(self, models: Iterable[str]) -> list[str]:
        """The models among `models` this table has no price for, sorted."""
        return sorted({m for m in models if m and m not in self._prices})

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        inp, out = (self._batch if batch else self._prices).get(model, (0.0, 0.0))
        return (prompt_tokens * inp + completion_tokens * out) / 1_000_000

    def estimate(self, n_calls: int, avg_prompt_tokens: float, avg_completion_tokens: float, model: str) -> float:
        """The cost of `n_calls` calls of the given average size, for the estimate shown before spending."""
        return n_calls * self.cost(model, avg_prompt_tokens, avg_completion_tokens)  # type: ignore[arg-type]


def worst_case_tokens(body: Mapping[str, Any], assumed_completion: int) -> tuple[int, int]:
    """Upper bounds (prompt, completion) for a chat-completions request body (see the module docstring)."""
    prompt = sum(len(canonical_json(body[k])) for k in ("messages", "tools", "response_format") if body.get(k))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or assumed_completion
    return prompt, int(limit) * max(1, int(body.get("n") or 1))


@dataclass
class Reservation:
    model: str
    tokens: int
    usd: float


class LedgerSnapshot(BaseModel):
    """Totals so far. `calls` counts requests sent (retries included); `cache_hits` cost nothing; `batched`
    counts the calls a Batch API answered (booked at the batch price)."""

    model_config = ConfigDict(frozen=True)
    calls: int
    succeeded: int
    failed: int
    cache_hits: int
    refused: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    by_model: dict[str, dict[str, int | float]]
    batched: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Ledger:
    """Thread-safe accounting of calls against a `Budget`, priced by a `PriceTable`."""

    _FIELDS = ("calls", "succeeded", "failed", "cache_hits", "refused", "prompt_tokens", "completion_tokens",
               "cost_usd", "latency_ms", "batched")

    def __init__(self, prices: PriceTable | Mapping[str, Any] | None = None, budget: Budget | None = None):
        self.prices = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        self.budget = budget or Budget()
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._by_model: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(self._FIELDS, 0))
        self._reserved_calls = 0
        self._reserved_tokens = 0
        self._reserved_usd = 0.0

    def _totals(self) -> dict[str, float]:
        return {f: sum(m[f] for m in self._by_model.values()) for f in self._FIELDS}

    def try_reserve(self, model: str, body: Mapping[str, Any], *, batch: bool = False) -> Reservation | None:
        """Reserve the worst case of one request (at the batch price with `batch`: it goes to a Batch API); None
        if only calls in flight stand in the way (try again after one settles); raise BudgetExceeded if the
        request cannot fit even then (nothing is sent)."""
        b = self.budget
        prompt, completion = worst_case_tokens(body, b.assumed_completion_tokens)
        tokens, usd = prompt + completion, self.prices.cost(model, prompt, completion, batch=batch)
        with self._lock:
            t = self._totals()
            spent_tokens = t["prompt_tokens"] + t["completion_tokens"]
            why, hint = None, None
            if b.max_calls is not None and t["calls"] + 1 > b.max_calls:
                why = f"the call budget of {b.max_calls} is used up ({int(t['calls'])} sent)"
            elif b.max_tokens is not None and spent_tokens + tokens > b.max_tokens:
                why = f"the token budget of {b.max_tokens} could be exceeded ({int(spent_tokens)} used)"
            elif b.max_usd is not None and not self.prices.knows(model):
                why = f"a dollar budget is set but model {model!r} has no price"
                hint = "add the model under llm.prices"
            elif b.max_usd is not None and t["cost_usd"] + usd > b.max_usd:
                why = f"the budget of ${b.max_usd:g} could be exceeded (${t['cost_usd']:.4f} spent)"
            if why:
                self._by_model[model]["refused"] += 1
                raise BudgetExceeded(f"LLM call refused: {why}", hint)
            over = (
                (b.max_calls is not None and t["calls"] + self._reserved_calls + 1 > b.max_calls)
                or (b.max_tokens is not None and spent_tokens + self._reserved_tokens + tokens > b.max_tokens)
                or (b.max_usd is not None and t["cost_usd"] + self._reserved_usd + usd > b.max_usd)
            )
            if over:
                return None
            self._reserved_calls += 1
            self._reserved_tokens += tokens
            self._reserved_usd += usd
        return Reservation(model, tokens, usd)

    def reserve(self, model: str, body: Mapping[str, Any], *, batch: bool = False) -> Reservation:
        """`try_reserve`, waiting (blocking this thread) while calls in flight hold the rest of the budget."""
        with self._settled:
            while (res := self.try_reserve(model, body, batch=batch)) is None:
                self._settled.wait(timeout=1.0)
        return res

    async def areserve(self, model: str, body: Mapping[str, Any], *, batch: bool = False) -> Reservation:
        """`try_reserve` for async callers: polls while calls in flight hold the rest of the budget."""
        import anyio

        while (res := self.try_reserve(model, body, batch=batch)) is None:
            await anyio.sleep(0.005)
        return res

    def settle(self, res: Reservation, *, ok: bool, usage: Mapping[str, Any] | None, latency_ms: float,
               batch: bool = False) -> None:
        """Replace a reservation by what the request actually used (a failed request uses no tokens), priced at
        the batch rate when a Batch API answered it."""
        prompt, completion = _usage_tokens(usage)
        with self._lock:
            self._reserved_calls -= 1
            self._reserved_tokens -= res.tokens
            self._reserved_usd -= res.usd
            m = self._by_model[res.model]
            m["calls"] += 1
            m["succeeded" if ok else "failed"] += 1
            m["prompt_tokens"] += prompt
            m["completion_tokens"] += completion
            m["cost_usd"] += self.prices.cost(res.model, prompt, completion, batch=batch)
            m["latency_ms"] += latency_ms
            m["batched"] += int(batch)
            self._settled.notify_all()

    def release(self, res: Reservation) -> None:
        """Give a reservation back unused (the request was answered without a call of its own)."""
        with self._lock:
            self._reserved_calls -= 1
            self._reserved_tokens -= res.tokens
            self._reserved_usd -= res.usd
            self._settled.notify_all()

    def unpriced(self) -> list[str]:
        """Models this ledger booked calls or cache hits for without a price: their cost shows as $0."""
        with self._lock:
            used = [m for m, v in self._by_model.items() if v["calls"] or v["cache_hits"]]
        return self.prices.unpriced(used)

    def record_hit(self, model: str) -> None:
        with self._lock:
            self._by_model[model]["cache_hits"] += 1

    def estimate(self, n_calls: int, avg_prompt_tokens: float, avg_completion_tokens: float, model: str) -> float:
        return self.prices.estimate(n_calls, avg_prompt_tokens, avg_completion_tokens, model)

    def snapshot(self) -> LedgerSnapshot:
        with self._lock:
            t = self._totals()
            by_model = {k: dict(v) for k, v in sorted(self._by_model.items())}
        ints = {f: int(t[f]) for f in self._FIELDS if f not in ("cost_usd", "latency_ms")}
        return LedgerSnapshot(**ints, cost_usd=t["cost_usd"], latency_ms=t["latency_ms"], by_model=by_model)


def _usage_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def price_warning(unpriced: Sequence[str]) -> str | None:
    """The warning for models called without a price, or None when every model had one."""
    if not unpriced:
        return None
    names = ", ".join(unpriced)
    return (f"no price for {names}: their calls cost $0 in every figure and budget here; add "
            f"[llm.prices.\"{unpriced[0]}\"] input = ... / output = ... (US dollars per million tokens) to the config")
