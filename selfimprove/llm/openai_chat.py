"""`OpenAIChat`: async chat completions through the official `openai` SDK to any OpenAI-compatible base_url.

- Rate limits: every request goes through its endpoint's adaptive limiter (selfimprove.llm.throttle), shared
  with the judges: a 429 pauses the endpoint's callers for its Retry-After and halves their concurrency, and
  the call is retried until it succeeds or has waited `rate_limit_wait_s`; a 429 alone does not fail a row.
- Retries: the SDK's own for timeouts, 5xx and dropped connections (exponential backoff with jitter),
  `max_retries` per call; a per-call `timeout`.
- Concurrency: at most `concurrency` calls in flight per instance (an asyncio.Semaphore) and a connection
  pool of the same size; fewer while the endpoint's limiter holds it lower.
- Cache, ledger and budget: the SDK's HTTP client runs on `AsyncCachingTransport`, so a repeated request is
  answered from the run folder's cache and every attempt is booked (see `httpx_cache`).
- Errors: a call that still fails after its retries returns a `ChatResult` with `error` set. Systemic
  failures raise `LLMUnavailable`: a bad key (401/403), an unknown model (404), an endpoint that cannot be
  reached before any call succeeded, or `max_consecutive_failures` finished calls in a row that failed.
  (Failures cluster at the end of a run, since retried calls finish last, so keep that threshold high.)
  A call the budget refuses raises `BudgetExceeded`.
- Batch: with `batch=BatchClient(...)` (selfimprove.llm.batch) the cache's misses go out through the provider's
  Batch API instead (no throttle, no SDK retries: the batch client resends failed lines in a follow-up batch),
  booked at the batch price; set `concurrency` to the number of calls to gather, since each waits for its batch.
- API key: read from the environment variable *named* by `api_key_env` and kept in memory only; when it is
  unset and the base_url is on loopback (the simulator, a local vLLM) a placeholder is used.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from selfimprove.core.errors import UsageError
from selfimprove.llm.accounting import BudgetExceeded, Ledger
from selfimprove.llm.cache import CallCache
from selfimprove.llm.types import ChatResult, LLMUnavailable, Usage, as_message_dicts

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
PLACEHOLDER_KEY = "selfimprove-local-placeholder"


def resolve_api_key(base_url: str, api_key_env: str) -> str:
    """The key from the named environment variable; a placeholder for a loopback base_url without one."""
    value = os.environ.get(api_key_env)
    if value:
        return value
    if (urlparse(base_url).hostname or "") in LOOPBACK:
        return PLACEHOLDER_KEY
    raise UsageError(
        f"environment variable {api_key_env} is not set (needed for {base_url})",
        hint=f"export {api_key_env}=... or set llm.*.api_key_env to the variable that holds the key",
    )


class OpenAIChat:
    """A `ChatModel` over the OpenAI SDK. `defaults` are request parameters (temperature, max_tokens, …)."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        model: str,
        defaults: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 16,
        cache: CallCache | str | Path | None = None,
        ledger: Ledger | None = None,
        max_consecutive_failures: int = 20,
        rate_limit_wait_s: float = 300.0,
        batch: Any = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url, self.api_key_env, self.model = base_url, api_key_env, model
        self.defaults = dict(defaults or {})
        self.timeout, self.max_retries, self.concurrency = timeout, max_retries, concurrency
        self.cache = CallCache(cache) if isinstance(cache, (str, Path)) else cache
        self.ledger = ledger if ledger is not None else Ledger()
        self.max_consecutive_failures = max_consecutive_failures
        self.rate_limit_wait_s = rate_limit_wait_s
        self.batch = batch  # a selfimprove.llm.batch.BatchClient: the cache's misses go out as batches
        self._api_key = resolve_api_key(base_url, api_key_env)
        self._state: tuple[Any, Any, asyncio.Semaphore] | None = None
        self._failures_in_a_row = 0
        self._ever_succeeded = False

    @classmethod
    def from_endpoint(cls, endpoint: Any, *, model: str | None = None, **kwargs: Any) -> OpenAIChat:
        """From a config `Endpoint` (base_url, api_key_env, model, timeout_s, max_retries)."""
        return cls(
            endpoint.base_url or "https://api.openai.com/v1", endpoint.api_key_env,
            model=model or endpoint.model, timeout=endpoint.timeout_s, max_retries=endpoint.max_retries,
            rate_limit_wait_s=endpoint.rate_limit_wait_s, **kwargs,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIChat({self.base_url!r}, model={self.model!r}, key from ${self.api_key_env})"

    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        """The SDK client and semaphore of the running event loop (both are bound to a loop)."""
        loop = asyncio.get_running_loop()
        if self._state is None or self._state[0] is not loop:
            import httpx2
            import openai

            from selfimprove.llm.httpx_cache import AsyncCachingTransport
            from selfimprove.llm.throttle import throttled_transport

            limits = httpx2.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            if self.batch is not None:  # no rate limits to adapt to; the batch client retries failed lines itself
                from selfimprove.llm.batch import batch_transport

                transport = AsyncCachingTransport(self.cache, self.ledger, batch_transport(self.batch))
            else:
                transport = throttled_transport(
                    AsyncCachingTransport(self.cache, self.ledger, httpx2.AsyncHTTPTransport(limits=limits)),
                    max_wait_s=self.rate_limit_wait_s)
            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
                max_retries=0 if self.batch is not None else self.max_retries,
                http_client=httpx2.AsyncClient(transport=transport, timeout=self.timeout),
            )
            self._state = (loop, client, asyncio.Semaphore(self.concurrency))
        return self._state[1], self._state[2]

    async def complete(
        self, messages: Sequence[Mapping[str, Any] | Any], *, sample_index: int = 0, timeout: float | None = None,
        **params: Any,
    ) -> ChatResult:
        """One chat completion. `params` override `defaults`; a None value means "not set"."""
        import openai

        from selfimprove.llm.httpx_cache import CACHE_HEADER, KEY_HEADER, LATENCY_HEADER, SAMPLE_HEADER

        body = {k: v for k, v in {**self.defaults, **params}.items() if v is not None}
        model = body.pop("model", self.model)
        if body.get("stream"):
            raise ValueError("streaming is not supported by the cached LLM layer")
        client, semaphore = self._client()
        options: dict[str, Any] = {"extra_headers": {SAMPLE_HEADER: str(int(sample_index))}}
        if timeout is not None:
            options["timeout"] = timeout
        async with semaphore:
            t0 = time.perf_counter()
            try:
                # every parameter goes in the JSON body as given: the cache key is that body
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, messages=as_message_dicts(messages), extra_body=body, **options
                )
            except BudgetExceeded:
                raise
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise LLMUnavailable(
                    f"{self.base_url} refused the API key from ${self.api_key_env} (HTTP {e.status_code})",
                    hint=f"check that {self.api_key_env} holds a valid key for this endpoint",
                ) from None
            except openai.NotFoundError as e:
                raise LLMUnavailable(
                    f"{self.base_url} does not serve model {model!r} (HTTP 404: {_short(e)})",
                    hint="check the model name and base_url in the config",
                ) from None
            except openai.APIError as e:
                return self._failed(model, e, (time.perf_counter() - t0) * 1000)
        try:
            result = self._result(model, raw, CACHE_HEADER, KEY_HEADER, LATENCY_HEADER)
        except (KeyError, IndexError, TypeError, ValueError) as e:  # a 200 that is not a chat completion
            return self._failed(model, ValueError(f"malformed response: {e!r}"), (time.perf_counter() - t0) * 1000)
        self._failures_in_a_row = 0
        self._ever_succeeded = True
        return result

    def _failed(self, model: str, err: Exception, latency_ms: float) -> ChatResult:
        import openai

        self._failures_in_a_row += 1
        status = getattr(err, "status_code", None)
        text = f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + f": {_short(err)}"
        unreachable = isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError)
        if unreachable and not self._ever_succeeded:
            raise LLMUnavailable(
                f"cannot reach {self.base_url} ({_short(err.__cause__ or err)}) after {self.max_retries} retries",
                hint="check that the endpoint is up and that base_url is right",
            )
        if self._failures_in_a_row >= self.max_consecutive_failures:
            raise LLMUnavailable(
                f"{self._failures_in_a_row} LLM calls in a row failed at {self.base_url}; last: {text}",
                hint="check that the endpoint is up and reachable; finished calls are cached",
            )
        return ChatResult(model=model, latency_ms=round(latency_ms, 3), error=text)

    def _result(self, model: str, raw: Any, cache_h: str, key_h: str, latency_h: str) -> ChatResult:
        data = json.loads(raw.content)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        u = data.get("usage") or {}
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens") or 0),
                      completion_tokens=int(u.get("completion_tokens") or 0))
        return ChatResult(
            model=model, text=message.get("content") or "", message=message,
            finish_reason=choice.get("finish_reason"), usage=usage,
            cost=self.ledger.prices.cost(model, usage.prompt_tokens, usage.completion_tokens),
            latency_ms=float(lat) if (lat := raw.headers.get(latency_h)) is not None else None,
            cached=raw.headers.get(cache_h) == "hit",
            key=raw.headers.get(key_h),
        )

    async def aclose(self) -> None:
        if self._state is not None and not self._state[0].is_closed():
            await self._state[1].close()
        self._state = None


def _short(err: Exception, limit: int = 200) -> str:
    msg = getattr(err, "message", None) or str(err)
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"
