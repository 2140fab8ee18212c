"""The LLM layer's contract: `ChatModel`, its requests and results, and its errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from selfimprove.core.errors import SelfimproveError


class LLMUnavailable(SelfimproveError):
    """A systemic failure: bad key (401/403), unknown model, or the endpoint failing call after call."""


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    """One chat call's outcome. Exactly one of (`message`, `error`) is set.

    `cost` is what the call costs at the price table (also for a cached result: the policy's price per call);
    `cached` says nothing was paid this time. `latency_ms` is the original call's latency, also when replayed
    from the cache, so that a re-run reproduces the same results: `cached` is the only field that differs; None for
    a call answered through the Batch API (it has no latency of its own).
    `key` is the cache key ("sha256:…"); a failed call has no key and nothing cached.
    """

    model_config = ConfigDict(frozen=True)
    model: str
    text: str = ""
    message: dict[str, Any] | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: float = 0.0
    latency_ms: float | None = 0.0
    cached: bool = False
    key: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ChatRequest(BaseModel):
    """One request for `run_many`: the messages, per-request parameters and the sample index."""

    model_config = ConfigDict(frozen=True)
    messages: tuple[dict[str, Any], ...]
    params: dict[str, Any] = Field(default_factory=dict)
    sample_index: int = 0


@runtime_checkable
class ChatModel(Protocol):
    """An async chat-completions model.

    Invariants: `complete` never raises for one bad call — a call that still fails after the retries comes
    back as a `ChatResult` with `error` set (one failure is data); it raises `BudgetExceeded` before a call
    that could pass the budget, and `LLMUnavailable` for a systemic failure. Equal requests (same messages,
    parameters and sample_index) give equal results.
    """

    model: str

    async def complete(
        self, messages: Sequence[Mapping[str, Any] | Any], *, sample_index: int = 0, **params: Any
    ) -> ChatResult: ...


def as_message_dicts(messages: Sequence[Mapping[str, Any] | Any]) -> list[dict[str, Any]]:
    """OpenAI message dicts from dicts or `selfimprove.core.records.Message` objects."""
    out = []
    for m in messages:
        out.append(m.to_openai() if hasattr(m, "to_openai") else dict(m))
    return out
