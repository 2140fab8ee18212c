"""Typed, immutable records: Message, Policy, Sample, EvalSpec, Checkpoint, Candidate, Build.

Messages mirror the OpenAI chat-completions shapes (content parts and tool calls included); `to_openai()`
gives the dict the SDK takes. Every record is frozen; derive a changed copy with `model_copy(update=...)`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from selfimprove.core.canonical import digest
from selfimprove.core.templates import TemplateFormat, render, variables_of

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


def _without_unset(data: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """`data` without the `optional` keys that are None (fields added later stay out of older digests)."""
    for key in optional:
        if data.get(key) is None:
            data.pop(key, None)
    return data


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContentPart(Record):
    """One part of a multi-part message: text, image_url, input_audio or file (OpenAI shapes)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None


class FunctionCall(Record):
    name: str
    arguments: str = ""


class ToolCall(Record):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Record):
    """A chat-completions message."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: the content, or its text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def to_openai(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def output_text(self) -> str:
        """What a judge reads of an output: its text, then its tool calls as JSON (function name and arguments;
        call ids are random per call, so left out) when it made any. The one form for production outputs and
        replays, so a tool call is judged the same way in both."""
        text = self.text()
        if not self.tool_calls:
            return text
        calls = json.dumps([{"function": {"arguments": c.function.arguments, "name": c.function.name},
                             "type": c.type} for c in self.tool_calls], ensure_ascii=False, sort_keys=True)
        return f"{text}\n{calls}" if text else calls


# Policy fields added after its first form: left out of the JSON (and so of the digest) while unset, so every
# policy written before them keeps its bytes and its digest.
_POLICY_OPTIONAL = ("template_format", "tool_choice", "parallel_tool_calls")


class Policy(Record):
    """The flat, complete parameters of one LLM call. `digest` identifies it.

    With `template_format` set ("F_STRING" `{var}` or "MUSTACHE" `{{var}}`, as Phoenix prompts know them), the
    system prompt is a template that each call renders with its own variables (`system_for`); unset, it is sent
    as it is. `tools` (with `tool_choice` and `parallel_tool_calls`) and `response_format` are sent with every call.
    """

    system_prompt: str
    model: str
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    few_shot: tuple[Message, ...] = ()
    template_format: TemplateFormat | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_optional(self, handler: Any) -> dict[str, Any]:
        return _without_unset(handler(self), _POLICY_OPTIONAL)

    @property
    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))

    @property
    def variables(self) -> frozenset[str]:
        """The template variables each call must supply (empty for a plain prompt). Raises TemplateError when the
        system prompt is not a valid template in its format."""
        return variables_of(self.system_prompt, self.template_format) if self.template_format else frozenset()

    def system_for(self, variables: dict[str, Any] | None = None) -> str:
        """The system prompt one call sends: the template rendered with `variables` (TemplateError when one is
        missing: never a literal placeholder), or the plain prompt."""
        return render(self.system_prompt, self.template_format, variables)

    def params(self) -> dict[str, Any]:
        """Invocation parameters for `chat.completions.create`, without the messages."""
        out: dict[str, Any] = {"model": self.model}
        for key in ("temperature", "top_p", "max_tokens", "response_format"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.tools:
            out["tools"] = list(self.tools)
            if self.tool_choice is not None:
                out["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                out["parallel_tool_calls"] = self.parallel_tool_calls
        return out

    def messages_for(self, history: list[Message] | tuple[Message, ...],
                     variables: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The full message list for a replay: this policy's system prompt (rendered with the call's `variables`
        when it is a template) and few-shots, then the history without its original system messages."""
        msgs = [{"role": "system", "content": self.system_for(variables)}]
        msgs += [m.to_openai() for m in self.few_shot]
        msgs += [m.to_openai() for m in history if m.role not in ("system", "developer")]
        return msgs


class EvalResult(Record):
    """One eval's verdict on one sample; None fields mean the eval is missing for that sample."""

    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    annotator_kind: str | None = None


class Sample(Record):
    """One production call: history before the output, the output, and each eval's verdict."""

    sample_id: str
    span_id: str
    trace_id: str
    step: int = 0
    start_time: str | None = None
    history: tuple[Message, ...]
    output: Message | None = None
    evals: dict[str, EvalResult] = Field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    policy_digest: str | None = None
    split: Literal["train", "test", "unsplit"] = "unsplit"
    variables: dict[str, Any] | None = None  # the call's template variables, as the span recorded them


# EvalSpec fields added after its first form: left out of the JSON (and so of the digest) while unset, so every
# spec written before them keeps its bytes and its digest.
_EVALSPEC_OPTIONAL = ("labels", "label_descriptions", "input_mapping")


class EvalSpec(Record):
    """Everything needed to replay a judge offline.

    Rails: `choices` maps each label to its score; a classifier given its choices as a plain list has `labels`
    instead (label-only: it has no score, so it is replayed and compared by label, never averaged). When the
    choices carried descriptions (`{label: (score, description)}`), `label_descriptions` keeps them (they change
    the judge's request). `input_mapping` is the evaluator's bound input mapping (phoenix-evals
    `bind_evaluator`): template variable -> the field it was read from, None where a function computed it.
    """

    name: str
    kind: Literal["llm", "code", "human"] = "llm"
    template: str | list[dict[str, Any]] | None = None
    choices: dict[str, float] | None = None
    labels: tuple[str, ...] | None = None
    label_descriptions: dict[str, str] | None = None
    judge_model: str | None = None
    provider: str | None = None
    invocation_params: dict[str, Any] = Field(default_factory=dict)
    direction: Literal["maximize", "minimize"] = "maximize"
    include_explanation: bool = True
    input_mapping: dict[str, str | None] | None = None

    @model_validator(mode="after")
    def _one_kind_of_rails(self) -> EvalSpec:
        if self.choices and self.labels:
            raise ValueError("give either choices (label -> score) or labels (label-only), not both")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_optional(self, handler: Any) -> dict[str, Any]:
        return _without_unset(handler(self), _EVALSPEC_OPTIONAL)

    @property
    def rails(self) -> tuple[str, ...]:
        """The labels a judge may answer, in order."""
        return tuple(self.choices) if self.choices else tuple(self.labels or ())

    @property
    def label_only(self) -> bool:
        """An LLM classifier without scores: replayed and compared by label, left out of score statistics."""
        return self.kind == "llm" and not self.choices and bool(self.labels)

    @property
    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))


class Checkpoint(Record):
    """What update learns from: the current policy, the eval specs and the split of the samples."""

    target: str
    policy: Policy
    evals: tuple[EvalSpec, ...]
    primary_eval: str | None = None
    train_ids: tuple[str, ...] = ()
    test_ids: tuple[str, ...] = ()
    counts: dict[str, int] = Field(default_factory=dict)


class Edit(Record):
    """One change an update proposes, with the feedback it addresses."""

    instruction: str
    addresses: str = ""
    kind: Literal["add", "replace", "remove", "param"] = "add"


class GuardResult(Record):
    name: str
    passed: bool
    reason: str = ""


class Candidate(Record):
    """A proposed policy with its lineage, rationale and guard results."""

    id: str
    policy: Policy
    parent: str | None = None
    edits: tuple[Edit, ...] = ()
    rationale: str = ""
    guards: tuple[GuardResult, ...] = ()
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def passed_guards(self) -> bool:
        return all(g.passed for g in self.guards)


class Build(Record):
    """A promoted policy: the version, its digest, the parent build, the run that proved it, the evidence."""

    target: str
    version: int
    policy: Policy
    policy_digest: str
    parent: str | None = None
    parent_digest: str | None = None
    run: str | None = None
    run_manifest_digest: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"v{self.version:04d}"

    @property
    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))
