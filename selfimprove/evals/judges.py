"""Judges: each captured EvalSpec replayed offline, on (input, candidate output), through our cache and ledger.

An LLM eval becomes the phoenix-evals evaluator the team ran — `ClassificationEvaluator(name, llm=LLM(provider=
"openai", model=<judge model>, base_url, api_key), prompt_template=<template>, choices=<rails: scores, with
descriptions when recorded, or the plain labels of a label-only eval>, include_explanation, **invocation_params)`
— so the request sent is exactly the one phoenix-evals sends. Template variables are filled from the sample
(`{input}` and its aliases) and the replayed output (`{output}` and its aliases), or through the input mapping the
spec recorded (`bind_evaluator`): see `resolve_variables`. A label-only eval's verdicts carry a label and no
score. Its OpenAI clients get our http client (selfimprove.llm.httpx_cache): every judge call shares the run's
call cache and ledger with the task calls, so a re-run pays nothing; retries happen in a transport above the
cache (selfimprove.llm.retry), so each attempt is booked and phoenix only sees the final answer. A code eval
(`kind="code"`) calls the function registered under its name (code_evals.register).

The contract (`Judge`): `judge(items)` returns one `Judgement` per item, in order; one failed judgement is a
Judgement with `error` set, never an exception. Only a systemic failure raises (BudgetExceeded, LLMUnavailable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from selfimprove.core.records import EvalResult, EvalSpec, Message
from selfimprove.llm.retry import CURRENT_CALL, CallRecord, retrying_transport

# Template variables a judge may use, filled from the sample ("input" side) or the replayed output ("output" side).
VARIABLE_SIDES = {"input": "input", "query": "input", "question": "input", "conversation": "input",
                  "output": "output", "response": "output", "answer": "output"}
KNOWN_VARIABLES = tuple(VARIABLE_SIDES)
# Fields an input mapping (phoenix-evals `bind_evaluator`) may read a variable from, by side: the aliases above,
# common column names, and OpenInference span fields (with or without `attributes.`). A span field is filled with
# the replay's text (the user turn or transcript; the output), not the raw JSON the span held.
MAPPED_FIELD_SIDES = {**VARIABLE_SIDES, "user_input": "input", "user_query": "input", "input.value": "input",
                      "llm.input_messages": "input", "messages": "input", "completion": "output",
                      "output.value": "output", "llm.output_messages": "output", "reply": "output"}


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


def judged_output_text(message: dict[str, Any] | None, text: str) -> str:
    """The text a judge reads of a replayed (or simulated) answer: `Message.output_text` (the content, then any tool calls as
    JSON), the same form as a production output's."""
    from selfimprove.core.records import FunctionCall, Message, ToolCall

    calls = [c for c in (message or {}).get("tool_calls") or [] if isinstance(c, dict) and c.get("function")]
    if not calls:
        return text
    return Message(role="assistant", content=text or None, tool_calls=tuple(
        ToolCall(function=FunctionCall(name=str(c["function"].get("name") or ""),
                                       arguments=str(c["function"].get("arguments") or ""))) for c in calls)
    ).output_text()


def resolve_variables(variables: Sequence[str], input_mapping: dict[str, str | None] | None
                      ) -> tuple[dict[str, str], dict[str, str]]:
    """({template variable: "input" | "output"}, {variable: why replay cannot fill it}).

    A variable the spec's input mapping names is filled from the side of the field it was read from; a field
    replay does not know, or a function (recorded as None), falls back on the variable's own name when that is
    a known alias, else the variable cannot be filled."""
    fill: dict[str, str] = {}
    unknown: dict[str, str] = {}
    mapping = input_mapping or {}
    for var in variables:
        why = "not a variable replay can fill"
        if var in mapping:
            field = mapping[var]
            if field is None:
                why = "computed by a function in the evaluator's input mapping (not recordable)"
            else:
                key = field.strip().removeprefix("$.").removeprefix("attributes.").lower()
                if key in MAPPED_FIELD_SIDES:
                    fill[var] = MAPPED_FIELD_SIDES[key]
                    continue
                why = f"mapped to the field {field!r}, which replay cannot fill"
        if var in VARIABLE_SIDES:
            fill[var] = VARIABLE_SIDES[var]
        else:
            unknown[var] = why
    return fill, unknown


@dataclass(frozen=True)
class JudgeEndpoint:
    """Where judge calls go. `model` overrides every spec's judge model (a judge override in config)."""

    base_url: str | None
    api_key: str | None
    model: str | None = None
    max_retries: int = 4
    timeout_s: float = 60.0
    rate_limit_wait_s: float = 300.0


# Parameters phoenix-evals sets itself; a captured spec carrying them would collide.
_RESERVED = {"model", "messages", "response_format", "tools", "tool_choice", "stream"}


class LLMJudge:
    """An LLM eval replayed with phoenix-evals' ClassificationEvaluator through our cache and ledger."""

    def __init__(self, spec: EvalSpec, endpoint: JudgeEndpoint, *, cache: Any, ledger: Any,
                 max_connections: int = 32, batch: Any = None):
        if not spec.rails:
            raise ValueError(f"eval '{spec.name}' has no choices or labels (rails); a classification judge needs "
                             "them")
        if not spec.template:
            raise ValueError(f"eval '{spec.name}' has no recorded template (a server-side evaluator, or a judge run "
                             "outside selfimprove.instrument()): stored only, its production verdicts are feedback "
                             f"for update; save its spec to evals/{spec.name}.json to replay it")
        self.spec, self.endpoint, self.cache, self.ledger = spec, endpoint, cache, ledger
        self.model = endpoint.model or spec.judge_model
        if not self.model:
            raise ValueError(f"eval '{spec.name}' names no judge model; set llm.judge.model")
        self.max_connections = max_connections
        self.batch = batch  # a selfimprove.llm.batch.BatchClient: cache misses go out as batches
        self._loop: Any = None
        self.evaluator = self._build()
        self.fill, unknown = resolve_variables(sorted(self.evaluator.prompt_template.variables), spec.input_mapping)
        if unknown:
            raise ValueError(f"eval '{spec.name}' uses template variable(s) "
                             + "; ".join(f"{v} ({why})" for v, why in sorted(unknown.items()))
                             + f"; replay fills {', '.join(KNOWN_VARIABLES)}, or a variable whose input mapping "
                               "names an input or output field")

    def _build(self) -> Any:
        """The phoenix-evals evaluator with fresh HTTP clients (connection pools belong to one event loop)."""
        import httpx2
        from phoenix.evals import LLM, ClassificationEvaluator

        from selfimprove.llm.httpx_cache import AsyncCachingTransport, CachingTransport

        spec, endpoint = self.spec, self.endpoint
        limits = httpx2.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        timeout = httpx2.Timeout(endpoint.timeout_s)
        if self.batch is None:
            async_transport = retrying_transport(
                AsyncCachingTransport(self.cache, self.ledger, httpx2.AsyncHTTPTransport(limits=limits)),
                self.ledger.prices, max_retries=endpoint.max_retries, rate_limit_wait_s=endpoint.rate_limit_wait_s)
        else:  # the batch client resends failed lines itself; an unbounded limiter lets a whole wave wait at once
            from selfimprove.llm.batch import batch_transport
            from selfimprove.llm.throttle import AdaptiveLimiter

            async_transport = retrying_transport(
                AsyncCachingTransport(self.cache, self.ledger, batch_transport(self.batch)), self.ledger.prices,
                max_retries=0, limiter=AdaptiveLimiter(ceiling=1_000_000))
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
            name=spec.name, llm=llm, prompt_template=spec.template, choices=phoenix_choices(spec),
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
            sides = {"input": input_text(item.history), "output": item.output}
            scores = await self._for_loop().async_evaluate({v: sides[side] for v, side in self.fill.items()})
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


def phoenix_choices(spec: EvalSpec) -> Any:
    """The spec's rails in the form ClassificationEvaluator takes: {label: score}, {label: (score, description)},
    or a list of labels for a label-only classifier (its verdicts then have no score)."""
    if spec.choices:
        desc = spec.label_descriptions or {}
        if desc and all(label in desc for label in spec.choices):
            return {label: (score, desc[label]) for label, score in spec.choices.items()}
        return dict(spec.choices)
    return list(spec.labels or ())


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
                 max_connections: int = 32, batch: Any = None) -> tuple[dict[str, Any], dict[str, str]]:
    """({eval name: judge}, {eval name: why it cannot be replayed}) for the given specs; with `batch` (a
    BatchClient) the LLM judges' cache misses go out through the Batch API."""
    judges: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        try:
            if spec.kind == "code":
                judges[spec.name] = CodeJudge(spec)
            elif spec.kind == "llm":
                judges[spec.name] = LLMJudge(spec, endpoint, cache=cache, ledger=ledger,
                                             max_connections=max_connections, batch=batch)
            elif spec.kind == "human":
                skipped[spec.name] = ("people's labels cannot be replayed: the gate uses the replayable evals; "
                                      "update learned from these labels as feedback")
            else:
                skipped[spec.name] = f"a {spec.kind} eval cannot be replayed offline"
        except ValueError as exc:
            skipped[spec.name] = str(exc)
    return judges, skipped
