"""The optimizer model behind the `OptimizerLM` protocol: a chat-completions call through the openai SDK.

`OpenAIOptimizerLM` takes any object with `chat.completions.create` (an `openai.OpenAI` client), so the same code
runs against OpenAI, any OpenAI-compatible endpoint, or the simulator. Accounting (calls, tokens, cost from the
configured prices) comes back on each `LMReply`; budgets are enforced by the caller (`Budget.reserve`).
"""

from __future__ import annotations

from typing import Any

from selfimprove.optimizers.base import LMReply


class OpenAIOptimizerLM:
    def __init__(self, client: Any, model: str, *, prices: dict[str, Any] | None = None,
                 max_tokens: int | None = None):
        self.client, self.model, self.max_tokens = client, model, max_tokens
        self.prices = prices or {}

    def _cost(self, usage: Any) -> float:
        price = self.prices.get(self.model)
        if price is None or usage is None:
            return 0.0
        get = price.get if isinstance(price, dict) else (lambda k, d=0.0: getattr(price, k, d))
        return (usage.prompt_tokens * get("input", 0.0) + usage.completion_tokens * get("output", 0.0)) / 1e6

    def complete(self, messages: list[dict[str, Any]], *, response_format: dict[str, Any] | None = None,
                 temperature: float | None = None) -> LMReply:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if response_format is not None:
            kwargs["response_format"] = response_format
        if temperature is not None:
            kwargs["temperature"] = temperature
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        resp = self.client.chat.completions.create(**kwargs)
        usage = getattr(resp, "usage", None)
        text = resp.choices[0].message.content or ""
        return LMReply(text=text, calls=1, tokens=getattr(usage, "total_tokens", 0) or 0, cost_usd=self._cost(usage))


def make_client(base_url: str | None, api_key: str | None, timeout_s: float = 60.0, max_retries: int = 2) -> Any:
    """An `openai.OpenAI` client (imported lazily)."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=max_retries)


class LedgerMeter:
    """Counts what the LLM layer's ledger booked (calls sent, retries included; cache hits are free)."""

    def __init__(self, ledger: Any):
        self.ledger = ledger

    def totals(self) -> tuple[int, int, float]:
        snap = self.ledger.snapshot()
        return snap.calls, snap.tokens, snap.cost_usd


def cached_client(base_url: str, api_key: str, cache: Any, ledger: Any, timeout_s: float = 60.0,
                  max_retries: int = 2) -> Any:
    """A sync `openai.OpenAI` client whose chat calls go through the run's call cache and ledger
    (selfimprove.llm.httpx_cache.CachingTransport): a re-run is free, and the ledger's budget is a hard cap.
    429s are waited out under the endpoint's adaptive limiter (selfimprove.llm.throttle)."""
    import httpx2
    import openai

    from selfimprove.llm.httpx_cache import CachingTransport
    from selfimprove.llm.throttle import throttled_sync_transport

    http = httpx2.Client(transport=throttled_sync_transport(CachingTransport(cache, ledger)), timeout=timeout_s)
    return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries,
                         http_client=http)


class MeteredOptimizerLM(OpenAIOptimizerLM):
    """`OpenAIOptimizerLM` over a cached client: calls, tokens and cost come from the ledger's bookings, so a
    cache hit costs 0 calls and a retried call counts every attempt."""

    def __init__(self, client: Any, model: str, meter: LedgerMeter, **kw: Any):
        super().__init__(client, model, **kw)
        self.meter = meter

    def complete(self, messages: list[dict[str, Any]], *, response_format: dict[str, Any] | None = None,
                 temperature: float | None = None) -> LMReply:
        c0, t0, u0 = self.meter.totals()
        reply = super().complete(messages, response_format=response_format, temperature=temperature)
        c1, t1, u1 = self.meter.totals()
        return LMReply(text=reply.text, calls=c1 - c0, tokens=t1 - t0, cost_usd=u1 - u0)
