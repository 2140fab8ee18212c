"""HTTP transports that serve chat-completions and embeddings calls from the call cache and book them in the ledger.

Wrap the transport of the `httpx2` client the OpenAI SDK uses (openai >= 3 is built on httpx2), and every
`POST .../chat/completions` or `POST .../embeddings` made through that client — by our `OpenAIChat`, our
`OpenAIEmbeddings` or phoenix-evals' judges (`phoenix_llm_kwargs`) — shares one cache and one ledger:

- cache hit: answered locally with the stored body (canonical JSON); nothing is sent, nothing is paid;
- miss: the budget reserves the worst case first (waiting while calls in flight hold the rest of it, or
  raising `BudgetExceeded`, which the SDK neither retries nor wraps: it is not an httpx error), the request is sent, each attempt is booked (the SDK's retries
  happen above the transport, so every retry is a booked call), and a 200 with `choices` is stored
  atomically before the response is handed back (for embeddings: a 200 with a `data` list);
- any other request (GET /models, streaming) passes through untouched.

The response carries `x-selfimprove-cache: hit|miss`, `x-selfimprove-key` and `x-selfimprove-latency-ms`
(the latency of the original call, so a replayed result is byte-identical; absent for a call answered by a
batch, which has none). Under the cache the request carries its key and sample index in its extensions
(`selfimprove_call`, never sent), for a batch transport (selfimprove.llm.batch); a response that transport
marks `x-selfimprove-batch` is booked at the batch price. A request may carry
`x-selfimprove-sample-index: N` (removed before sending) to ask for the N-th independent sample.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from selfimprove.core.canonical import canonical_json
from selfimprove.llm.accounting import Ledger, Reservation
from selfimprove.llm.batch import BATCH_HEADER, CALL_EXTENSION, SHARED_HEADER
from selfimprove.llm.cache import CallCache, embeddings_key, request_key

SAMPLE_HEADER = "x-selfimprove-sample-index"
CACHE_HEADER = "x-selfimprove-cache"
KEY_HEADER = "x-selfimprove-key"
LATENCY_HEADER = "x-selfimprove-latency-ms"
_DROP = {"content-length", "content-encoding", "transfer-encoding"}


@dataclass(frozen=True)
class _Endpoint:
    """What differs between the cached endpoints: the key, the worst case to reserve, what counts as a result."""

    suffix: str
    key: Callable[[dict[str, Any], int], str]
    reservation: Callable[[dict[str, Any]], dict[str, Any]]
    ok: Callable[[dict[str, Any]], bool]


def _embeddings_reservation(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    return {"messages": inputs if isinstance(inputs, list) else [inputs], "max_completion_tokens": 1}


_ENDPOINTS = (
    _Endpoint("/chat/completions", request_key, lambda body: body, lambda parsed: bool(parsed.get("choices"))),
    _Endpoint("/embeddings", lambda body, _index: embeddings_key(body), _embeddings_reservation,
              lambda parsed: isinstance(parsed.get("data"), list)),
)


@dataclass
class _Call:
    key: str
    body: dict[str, Any]
    sample_index: int
    model: str
    endpoint: _Endpoint

    @property
    def reservation(self) -> dict[str, Any]:
        return self.endpoint.reservation(self.body)


class _Broker:
    """The transport-independent part: recognise, look up, reserve, book, store."""

    def __init__(self, cache: CallCache | None, ledger: Ledger | None):
        self.cache = cache
        self.ledger = ledger or Ledger()

    def recognise(self, request: httpx2.Request) -> _Call | None:
        sample = request.headers.get(SAMPLE_HEADER)
        if sample is not None:
            del request.headers[SAMPLE_HEADER]
        path = request.url.path.rstrip("/")
        endpoint = next((e for e in _ENDPOINTS if path.endswith(e.suffix)), None)
        if request.method != "POST" or endpoint is None:
            return None
        try:
            body = json.loads(request.content)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("stream"):
            return None
        index = int(sample or 0)
        call = _Call(endpoint.key(body, index), body, index, str(body.get("model", "")), endpoint)
        request.extensions[CALL_EXTENSION] = (call.key, index)
        return call

    def lookup(self, call: _Call, request: httpx2.Request) -> httpx2.Response | None:
        entry = self.cache.get(call.key) if self.cache is not None else None
        if entry is None:
            return None
        self.ledger.record_hit(call.model)
        return self._response(200, {}, entry["response"], call, request, "hit", entry.get("latency_ms", 0.0))

    def finish(self, call: _Call, res: Reservation, sent: httpx2.Response, content: bytes, latency_ms: float | None,
               request: httpx2.Request) -> tuple[httpx2.Response, dict[str, Any] | None]:
        """Book the attempt; return (response for the SDK, parsed body to store or None)."""
        batched = BATCH_HEADER in sent.headers
        if batched:
            latency_ms = None  # the wait for a batch is not the call's latency
        if SHARED_HEADER in sent.headers and sent.status_code == 200:  # an equal request paid for this answer
            self.ledger.release(res)
            self.ledger.record_hit(call.model)
            return self._response(200, sent.headers, json.loads(content), call, request, "hit", None), None
        parsed: Any = None
        if sent.status_code == 200:
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = None
        ok = isinstance(parsed, dict) and call.endpoint.ok(parsed)
        self.ledger.settle(res, ok=ok, usage=parsed.get("usage") if ok else None, latency_ms=latency_ms or 0.0,
                           batch=batched)
        if not ok:
            headers = [(k, v) for k, v in sent.headers.multi_items() if k.lower() not in _DROP]
            return httpx2.Response(sent.status_code, headers=headers, content=content, request=request), None
        return self._response(200, sent.headers, parsed, call, request, "miss", latency_ms), parsed

    @staticmethod
    def _response(status: int, headers: Any, body: Any, call: _Call, request: httpx2.Request, how: str,
                  latency_ms: float | None) -> httpx2.Response:
        out = [(k, v) for k, v in httpx2.Headers(headers).multi_items() if k.lower() not in _DROP]
        out = [(k, v) for k, v in out if k.lower() != "content-type"] + [
            ("content-type", "application/json"),
            (CACHE_HEADER, how),
            (KEY_HEADER, call.key),
        ] + ([] if latency_ms is None else [(LATENCY_HEADER, f"{latency_ms:.3f}")])
        return httpx2.Response(status, headers=out, content=canonical_json(body), request=request)


class CachingTransport(httpx2.BaseTransport):
    """Sync transport (phoenix-evals' sync evaluators run through this)."""

    def __init__(self, cache: CallCache | None, ledger: Ledger | None = None,
                 inner: httpx2.BaseTransport | None = None):
        self._broker = _Broker(cache, ledger)
        self.ledger = self._broker.ledger
        self._inner = inner or httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        call = self._broker.recognise(request)
        if call is None:
            return self._inner.handle_request(request)
        hit = self._broker.lookup(call, request)
        if hit is not None:
            return hit
        res = self.ledger.reserve(call.model, call.reservation, batch=_sends_batches(self._inner))
        t0 = time.perf_counter()
        try:
            sent = self._inner.handle_request(request)
            content = sent.read()
        except BaseException:
            self.ledger.settle(res, ok=False, usage=None, latency_ms=(time.perf_counter() - t0) * 1000)
            raise
        response, parsed = self._broker.finish(call, res, sent, content, (time.perf_counter() - t0) * 1000, request)
        if parsed is not None and self._broker.cache is not None:
            self._broker.cache.put(call.key, call.body, call.sample_index, parsed,
                                   _latency(response))
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncCachingTransport(httpx2.AsyncBaseTransport):
    """Async transport (our `OpenAIChat` and phoenix-evals' async evaluators run through this)."""

    def __init__(self, cache: CallCache | None, ledger: Ledger | None = None,
                 inner: httpx2.AsyncBaseTransport | None = None):
        self._broker = _Broker(cache, ledger)
        self.ledger = self._broker.ledger
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        call = self._broker.recognise(request)
        if call is None:
            return await self._inner.handle_async_request(request)
        hit = self._broker.lookup(call, request)
        if hit is not None:
            return hit
        res = await self.ledger.areserve(call.model, call.reservation, batch=_sends_batches(self._inner))
        t0 = time.perf_counter()
        try:
            sent = await self._inner.handle_async_request(request)
            content = await sent.aread()
        except BaseException:
            self.ledger.settle(res, ok=False, usage=None, latency_ms=(time.perf_counter() - t0) * 1000)
            raise
        response, parsed = self._broker.finish(call, res, sent, content, (time.perf_counter() - t0) * 1000, request)
        if parsed is not None and self._broker.cache is not None:
            # on the loop (no fsync, ~0.2 ms): the entry is written before the caller sees the result
            self._broker.cache.put(call.key, call.body, call.sample_index, parsed,
                                   _latency(response))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _sends_batches(transport: Any) -> bool:
    """Whether `transport` sends every call through a Batch API (its calls are reserved at the batch price)."""
    return bool(getattr(transport, "sends_batches", False))


def _latency(response: httpx2.Response) -> float | None:
    value = response.headers.get(LATENCY_HEADER)
    return None if value is None else float(value)


def phoenix_llm_kwargs(cache: CallCache | None, ledger: Ledger, *, max_connections: int = 32) -> dict[str, Any]:
    """Keyword arguments for `phoenix.evals.LLM(provider="openai", ...)` that route its calls through us.

    phoenix-evals builds `OpenAI(max_retries=0, **kwargs)` and `AsyncOpenAI(max_retries=0, **kwargs)`, with
    `sync_client_kwargs`/`async_client_kwargs` merged per client, so passing our http clients there is enough.
    """
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return {
        "sync_client_kwargs": {
            "http_client": httpx2.Client(transport=CachingTransport(cache, ledger, httpx2.HTTPTransport(limits=limits)))
        },
        "async_client_kwargs": {
            "http_client": httpx2.AsyncClient(
                transport=AsyncCachingTransport(cache, ledger, httpx2.AsyncHTTPTransport(limits=limits))
            )
        },
    }
