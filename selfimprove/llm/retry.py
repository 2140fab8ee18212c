"""Judge calls' transport: retries above the call cache, and per-call accounting for the task that made the call.

phoenix-evals builds its OpenAI clients with `max_retries=0`, and its `RateLimiter` (phoenix/evals/
rate_limiters.py) has `max_rate_limit_retries=0`: a 429 it sees fails the row at once, after halving its token
bucket's rate and sleeping a 5-second cooldown while blocking every other request. So 429s never reach it: they
go through the endpoint's adaptive limiter (selfimprove.llm.throttle: Retry-After honoured, concurrency halved,
retried until `rate_limit_wait_s`), and 408/409/5xx and connection errors are retried here `max_retries` times
with jittered backoff. All of it happens in a transport above the cache: each attempt is booked, phoenix only sees
the final answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
from dataclasses import dataclass, field
from typing import Any

from selfimprove.llm.throttle import DEFAULT_MAX_WAIT_S, limiter_for, retry_after_seconds, send_throttled


# ---- per-call accounting: the retrying transport writes into the record of the task that made the call ----
@dataclass
class CallRecord:
    attempts: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    cached: bool = False
    statuses: list[int] = field(default_factory=list)


CURRENT_CALL: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("selfimprove_call", default=None)


def retrying_transport(inner: Any, prices: Any, *, max_retries: int = 4, base_delay: float = 0.25,
                       max_delay: float = 10.0, rate_limit_wait_s: float = DEFAULT_MAX_WAIT_S,
                       limiter: Any = None) -> Any:
    """An httpx2 async transport sending through the endpoint's adaptive limiter (429s waited out; `limiter`
    replaces it, e.g. an unbounded one for calls that wait for a batch), retrying 408/409/5xx and connection errors
    with jittered exponential backoff (Retry-After honoured), and recording each call's attempts, tokens, cost,
    latency and cache hit in `CURRENT_CALL`."""
    import httpx2

    from selfimprove.llm.httpx_cache import CACHE_HEADER, LATENCY_HEADER

    class RetryingTransport(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            rec = CURRENT_CALL.get()

            def seen(status: int) -> None:
                if rec is not None:
                    rec.attempts += 1
                    rec.statuses.append(status)

            attempt = 0
            while True:
                attempt += 1
                try:
                    resp = await send_throttled(limiter or limiter_for(request.url),
                                                lambda: inner.handle_async_request(request),
                                                max_wait_s=rate_limit_wait_s, on_attempt=seen)
                except httpx2.TransportError:
                    if rec is not None:
                        rec.attempts += 1
                    if attempt > max_retries:
                        raise
                    await asyncio.sleep(_backoff(attempt, base_delay, max_delay))
                    continue
                status = resp.status_code
                if (status in (408, 409) or status >= 500) and attempt <= max_retries:
                    delay = retry_after_seconds(resp.headers) or _backoff(attempt, base_delay, max_delay)
                    await resp.aclose()
                    await asyncio.sleep(min(delay, max_delay * 3))
                    continue
                if rec is not None and status == 200:
                    body = json.loads(await resp.aread())
                    usage = body.get("usage") or {}
                    p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                    rec.tokens += p + c
                    rec.cost_usd += prices.cost(str(body.get("model") or ""), p, c) if prices else 0.0
                    rec.cached = resp.headers.get(CACHE_HEADER) == "hit"
                    lat = resp.headers.get(LATENCY_HEADER)
                    rec.latency_ms = float(lat) if lat is not None else None
                return resp

        async def aclose(self) -> None:
            await inner.aclose()

    return RetryingTransport()


def _backoff(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
