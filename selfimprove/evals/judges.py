"""Judges: each captured EvalSpec replayed offline, on (input, candidate output), through our cache and ledger.

An LLM eval becomes the phoenix-evals evaluator the team ran — `ClassificationEvaluator(name, llm=LLM(provider=
"openai", model=<judge model>, base_url, api_key), prompt_template=<template>, choices=<rails>,
include_explanation, **invocation_params)` — so the request sent is exactly the one phoenix-evals sends. Its
OpenAI clients get our http client (selfimprove.llm.httpx_cache): every judge call shares the run's call cache
and ledger with the task calls, so a re-run pays nothing. phoenix-evals builds its clients with
`max_retries=0` and reacts to a 429 with a 5-second global cooldown, so retries (429, 5xx, connection errors,
honouring Retry-After) happen in a transport *above* the cache: each attempt is booked, phoenix only sees the
final answer. A code eval (`kind="code"`) calls the function registered under its name (code_evals.register).

The contract (`Judge`): `judge(items)` returns one `Judgement` per item, in order; one failed judgement is a
Judgement with `error` set, never an exception. Only a systemic failure raises (BudgetExceeded, LLMUnavailable).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from selfimprove.core.records import EvalResult, EvalSpec, Message

# Template variables a judge may use, filled from the sample and the replayed output.
KNOWN_VARIABLES = ("input", "output", "query", "question", "response", "answer", "conversation")


@dataclass(frozen=True)
class JudgeItem:
    """One (sample, replayed output) to judge. `output` is None when the generation failed."""

    sample_id: str
    history: tuple[Message, ...]
    output: str | None
    sample: Any = None


@dataclass
class Judgement:
    """One eval's verdict on one item, with what the judge call cost (zero for a cache hit's `paid_*`)."""

    sample_id: str
    eval: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    cached: bool = False
    attempts: int = 0


class Judge(Protocol):
    """Scores outputs with one eval. Never raises for one bad item: it comes back with `error` set."""

    spec: EvalSpec

    async def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]: ...


def input_text(history: Sequence[Message]) -> str:
    """The judge's `{input}`: the one user message, or a role-prefixed transcript of a longer history."""
    turns = [m for m in history if m.role not in ("system", "developer")]
    if len(turns) == 1:
        return turns[0].text()
    return "\n".join(f"{m.role}: {m.text()}" for m in turns)


def judge_variables(item: JudgeItem) -> dict[str, str]:
    text_in, text_out = input_text(item.history), item.output or ""
    return {"input": text_in, "output": text_out, "query": text_in, "question": text_in, "response": text_out,
            "answer": text_out, "conversation": text_in}


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
                       max_delay: float = 10.0) -> Any:
    """An httpx2 async transport retrying 408/409/429/5xx and connection errors with jittered exponential
    backoff (Retry-After / retry-after-ms honoured), recording each call's tokens, cost, latency and cache hit
    in `CURRENT_CALL`."""
    import httpx2

    from selfimprove.llm.httpx_cache import CACHE_HEADER, LATENCY_HEADER

    class RetryingTransport(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            rec = CURRENT_CALL.get()
            attempt = 0
            while True:
                attempt += 1
                if rec is not None:
                    rec.attempts += 1
                try:
                    resp = await inner.handle_async_request(request)
                except httpx2.TransportError:
                    if attempt > max_retries:
                        raise
                    await asyncio.sleep(_backoff(attempt, base_delay, max_delay))
                    continue
                status = resp.status_code
                if rec is not None:
                    rec.statuses.append(status)
                if (status in (408, 409, 429) or status >= 500) and attempt <= max_retries:
                    delay = _retry_after(resp.headers) or _backoff(attempt, base_delay, max_delay)
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


def _retry_after(headers: Any) -> float | None:
    for key, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(key)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where judge calls go. `model` overrides every spec's judge model (a judge override in config)."""

    base_url: str | None
    api_key: str | None
    model: str | None = None
    max_retries: int = 4
    timeout_s: float = 60.0


# Parameters phoenix-evals sets itself; a captured spec carrying them would collide.
_RESERVED = {"model", "messages", "response_format", "tools", "tool_choice", "stream"}


class LLMJudge:
    """An LLM eval replayed with phoenix-evals' ClassificationEvaluator through our cache and ledger."""

    def __init__(self, spec: EvalSpec, endpoint: JudgeEndpoint, *, cache: Any, ledger: Any,
                 max_connections: int = 32):
        if not spec.choices:
            raise ValueError(f"eval '{spec.name}' has no choices (rails); a classification judge needs them")
        if not spec.template:
            raise ValueError(f"eval '{spec.name}' has no template")
        self.spec, self.endpoint, self.cache, self.ledger = spec, endpoint, cache, ledger
        self.model = endpoint.model or spec.judge_model
        if not self.model:
            raise ValueError(f"eval '{spec.name}' names no judge model; set llm.judge.model")
        self.max_connections = max_connections
        self._loop: Any = None
        self.evaluator = self._build()
        unknown = sorted(set(self.evaluator.prompt_template.variables) - set(KNOWN_VARIABLES))
        if unknown:
            raise ValueError(f"eval '{spec.name}' uses template variable(s) {', '.join(unknown)}; replay can fill "
                             f"{', '.join(KNOWN_VARIABLES)}")

    def _build(self) -> Any:
        """The phoenix-evals evaluator with fresh HTTP clients (connection pools belong to one event loop)."""
        import httpx2
        from phoenix.evals import LLM, ClassificationEvaluator

        from selfimprove.llm.httpx_cache import AsyncCachingTransport, CachingTransport

        spec, endpoint = self.spec, self.endpoint
        limits = httpx2.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        timeout = httpx2.Timeout(endpoint.timeout_s)
        async_transport = retrying_transport(
            AsyncCachingTransport(self.cache, self.ledger, httpx2.AsyncHTTPTransport(limits=limits)),
            self.ledger.prices, max_retries=endpoint.max_retries)
        client_kwargs: dict[str, Any] = {"api_key": endpoint.api_key or "unused"}
        if endpoint.base_url:
            client_kwargs["base_url"] = endpoint.base_url
        llm = LLM(
            provider="openai", model=self.model, initial_per_second_request_rate=1_000_000.0, **client_kwargs,
            sync_client_kwargs={"http_client": httpx2.Client(transport=CachingTransport(self.cache, self.ledger),
                                                             timeout=timeout)},
            async_client_kwargs={"http_client": httpx2.AsyncClient(transport=async_transport, timeout=timeout)},
        )
        params = {k: v for k, v in (spec.invocation_params or {}).items() if k not in _RESERVED}
        return ClassificationEvaluator(
            name=spec.name, llm=llm, prompt_template=spec.template, choices=dict(spec.choices),
            include_explanation=spec.include_explanation, direction=spec.direction, **params)

    def _for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            self._loop, self.evaluator = loop, self._build()
        return self.evaluator

    async def judge_one(self, item: JudgeItem) -> Judgement:
        if item.output is None:
            return Judgement(item.sample_id, self.spec.name, error="no output to judge (generation failed)")
        rec = CallRecord()
        token = CURRENT_CALL.set(rec)
        try:
            scores = await self._for_loop().async_evaluate(judge_variables(item))
            s = scores[0]
            out = Judgement(item.sample_id, self.spec.name, label=s.label,
                            score=None if s.score is None else float(s.score), explanation=s.explanation)
        except Exception as exc:
            if _systemic(exc):
                raise
            out = Judgement(item.sample_id, self.spec.name, error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            CURRENT_CALL.reset(token)
        out.tokens, out.cost_usd, out.latency_ms = rec.tokens, rec.cost_usd, rec.latency_ms
        out.cached, out.attempts = rec.cached, rec.attempts
        return out

    async def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return list(await asyncio.gather(*(self.judge_one(i) for i in items)))


def _systemic(exc: BaseException) -> bool:
    from selfimprove.core.errors import SelfimproveError

    if isinstance(exc, SelfimproveError):  # BudgetExceeded, LLMUnavailable
        return True
    status = getattr(exc, "status_code", None)
    return status in (401, 403, 404)


class CodeJudge:
    """A code eval: the function registered under the spec's name, called on (input, output)."""

    def __init__(self, spec: EvalSpec):
        from selfimprove.evals.code_evals import get

        fn = get(spec.name)
        if fn is None:
            raise ValueError(f"no code evaluator registered as '{spec.name}' "
                             "(selfimprove.evals.code_evals.register)")
        self.spec, self.fn = spec, fn

    async def judge_one(self, item: JudgeItem) -> Judgement:
        from selfimprove.evals.code_evals import call_code_eval

        if item.output is None:
            return Judgement(item.sample_id, self.spec.name, error="no output to judge (generation failed)")
        try:
            r: EvalResult = call_code_eval(self.fn, self.spec, input=input_text(item.history), output=item.output,
                                           sample=item.sample)
        except Exception as exc:  # noqa: BLE001 - a broken code eval on one sample is data
            return Judgement(item.sample_id, self.spec.name, error=f"{type(exc).__name__}: {exc}"[:500])
        return Judgement(item.sample_id, self.spec.name, label=r.label, score=r.score, explanation=r.explanation)

    async def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [await self.judge_one(i) for i in items]


def build_judges(specs: Sequence[EvalSpec], endpoint: JudgeEndpoint, *, cache: Any, ledger: Any,
                 max_connections: int = 32) -> tuple[dict[str, Any], dict[str, str]]:
    """({eval name: judge}, {eval name: why it cannot be replayed}) for the given specs."""
    judges: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        try:
            if spec.kind == "code":
                judges[spec.name] = CodeJudge(spec)
            elif spec.kind == "llm":
                judges[spec.name] = LLMJudge(spec, endpoint, cache=cache, ledger=ledger,
                                             max_connections=max_connections)
            else:
                skipped[spec.name] = f"a {spec.kind} eval cannot be replayed offline"
        except ValueError as exc:
            skipped[spec.name] = str(exc)
    return judges, skipped
