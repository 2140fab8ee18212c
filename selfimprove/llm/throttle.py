"""Adaptive concurrency per provider endpoint: a 429 slows every caller of that endpoint down instead of failing rows.

One `AdaptiveLimiter` per endpoint (scheme, host and port) in the process, shared by the task client, the
optimizer client and the judges, since a provider's rate limit counts all of them together. AIMD:

- a call takes a slot (at most `limit` calls in flight; calls waiting out a 429 go before new ones);
- a 429 pauses every caller until its Retry-After (retry-after-ms, retry-after, else a backoff) has passed, and
  halves the limit, once per congestion episode (the burst of calls that were in flight when the first 429
  came back cuts it once, not once each);
- each success raises the limit by 1/limit (about +1 per round of calls), up to `ceiling`.

`send_throttled` is the loop every transport uses: a 429 is retried until it succeeds or the call has waited
`max_wait_s` in all (then the last 429 goes back to the caller, which counts the row as failed). Each attempt
still goes to the network through the caller's transport, so the cache and the ledger book every 429 as a call.
Waiting polls the limiter's state, so one limiter serves any event loop and any thread.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MAX_WAIT_S = 300.0
_POLL_S = 0.01


class AdaptiveLimiter:
    def __init__(self, ceiling: int = 256, floor: int = 1):
        self.ceiling, self.floor = ceiling, floor
        self.limit = float(ceiling)
        self.in_flight = 0
        self.throttled = 0  # 429s seen
        self.cuts = 0  # times the limit was halved
        self._paused_until = 0.0
        self._episode_until = 0.0
        self._retries_waiting = 0
        self._lock = threading.Lock()

    def try_acquire(self, retry: bool) -> float | None:
        """Take a slot (None) or say how long to wait before asking again. A call retrying after a 429
        (`retry`) goes before calls that have not started."""
        with self._lock:
            now = time.monotonic()
            free = self.in_flight < max(self.floor, int(self.limit))
            if now >= self._paused_until and free and (retry or self._retries_waiting == 0):
                self.in_flight += 1
                return None
            return min(max(self._paused_until - now, _POLL_S), 0.25)

    async def acquire(self, *, retry: bool = False) -> None:
        with self._waiting(retry):
            while (wait := self.try_acquire(retry)) is not None:
                await asyncio.sleep(wait)

    def acquire_sync(self, *, retry: bool = False) -> None:
        with self._waiting(retry):
            while (wait := self.try_acquire(retry)) is not None:
                time.sleep(wait)

    @contextmanager
    def _waiting(self, retry: bool) -> Iterator[None]:
        if retry:
            with self._lock:
                self._retries_waiting += 1
        try:
            yield
        finally:
            if retry:
                with self._lock:
                    self._retries_waiting -= 1

    def release(self, status: int | None, retry_after: float | None = None) -> float:
        """Give the slot back after an answer with `status` (None: no answer); returns the pause after a 429."""
        with self._lock:
            self.in_flight -= 1
            now = time.monotonic()
            if status != 429:
                if status is not None and status < 400:
                    self.limit = min(float(self.ceiling), self.limit + 1.0 / max(self.limit, 1.0))
                return 0.0
            self.throttled += 1
            pause = retry_after if retry_after is not None else 0.5 + random.random() / 2
            self._paused_until = max(self._paused_until, now + pause)
            if now >= self._episode_until:  # the first 429 of an episode
                self.limit = max(float(self.floor), min(self.limit, self.in_flight + 1.0) / 2)
                self.cuts += 1
                self._episode_until = self._paused_until
            return max(0.0, self._paused_until - now)


_limiters: dict[str, AdaptiveLimiter] = {}
_registry_lock = threading.Lock()
_ceiling = 256  # calls in flight per endpoint, at most (`cap_concurrency`)


def limiter_for(url: Any) -> AdaptiveLimiter:
    """The process-wide limiter of the endpoint `url` belongs to."""
    parts = urlsplit(str(url))
    key = f"{parts.scheme}://{parts.netloc}"
    with _registry_lock:
        if key not in _limiters:
            _limiters[key] = AdaptiveLimiter(ceiling=_ceiling)
        return _limiters[key]


def cap_concurrency(ceiling: int) -> None:
    """At most `ceiling` calls in flight per endpoint in this process, whoever sends them (`run --all`: every
    target on one provider shares it). Applies to the endpoints' limiters now and later."""
    global _ceiling
    if ceiling < 1:
        raise ValueError(f"a concurrency cap must be at least 1, got {ceiling}")
    with _registry_lock:
        _ceiling = ceiling
        for limiter in _limiters.values():
            with limiter._lock:
                limiter.ceiling = ceiling
                limiter.limit = min(limiter.limit, float(ceiling))


def retry_after_seconds(headers: Any) -> float | None:
    """Retry-After as seconds: `retry-after-ms`, else `retry-after` in seconds; None when absent or unreadable."""
    for key, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(key)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


async def send_throttled(limiter: AdaptiveLimiter, send: Callable[[], Awaitable[Any]], *,
                         max_wait_s: float = DEFAULT_MAX_WAIT_S,
                         on_attempt: Callable[[int], None] | None = None) -> Any:
    """`await send()` under the limiter, retrying 429s (Retry-After honoured) until an answer that is not a 429
    or `max_wait_s` spent; returns that answer (an httpx response). `on_attempt(status)` sees every attempt."""
    started = time.monotonic()
    retry = False
    while True:
        await limiter.acquire(retry=retry)
        try:
            response = await send()
        except BaseException:
            limiter.release(None)
            raise
        status = response.status_code
        pause = limiter.release(status, retry_after_seconds(response.headers) if status == 429 else None)
        if on_attempt is not None:
            on_attempt(status)
        if status != 429 or time.monotonic() - started + pause > max_wait_s:
            return response
        await response.aclose()
        retry = True


def send_throttled_sync(limiter: AdaptiveLimiter, send: Callable[[], Any], *,
                        max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Any:
    """The blocking twin of `send_throttled`, for sync clients (the optimizer's)."""
    started = time.monotonic()
    retry = False
    while True:
        limiter.acquire_sync(retry=retry)
        try:
            response = send()
        except BaseException:
            limiter.release(None)
            raise
        status = response.status_code
        pause = limiter.release(status, retry_after_seconds(response.headers) if status == 429 else None)
        if status != 429 or time.monotonic() - started + pause > max_wait_s:
            return response
        response.close()
        retry = True


def throttled_transport(inner: Any, *, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Any:
    """An httpx2 async transport sending every request through `send_throttled` with its endpoint's limiter."""
    import httpx2

    from selfimprove.llm.httpx_cache import SAMPLE_HEADER

    class ThrottledTransport(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            sample = request.headers.get(SAMPLE_HEADER)

            def send() -> Any:
                if sample is not None:  # the cache layer removes it; a retry must ask for the same sample
                    request.headers[SAMPLE_HEADER] = sample
                return inner.handle_async_request(request)

            return await send_throttled(limiter_for(request.url), send, max_wait_s=max_wait_s)

        async def aclose(self) -> None:
            await inner.aclose()

    return ThrottledTransport()


def throttled_sync_transport(inner: Any, *, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> Any:
    """The sync twin of `throttled_transport`."""
    import httpx2

    class ThrottledSyncTransport(httpx2.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            return send_throttled_sync(limiter_for(request.url), lambda: inner.handle_request(request),
                                       max_wait_s=max_wait_s)

        def close(self) -> None:
            inner.close()

    return ThrottledSyncTransport()
