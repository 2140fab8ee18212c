"""Raw span rows -> parsed production calls (history, output, the policy that produced them), or a reason why not.

One bad span is data, never an exception: `parse_span` returns a `BadSpan` with one of `BAD_REASONS`.
The policy of a call is read from its messages and invocation parameters: the system prompt is the call's
leading system/developer messages, or the OpenInference prompt template that provably rendered them
(`selfimprove.telemetry.prompt_template`: `using_prompt_template` or `selfimprove.tag_policy`; a template stays
one policy across calls, and each call keeps its variables); model, temperature, top_p, max_tokens,
response_format, tools and tool_choice come from the invocation parameters (the request's model, else the span's
model name) and `llm.tools`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from selfimprove.core.records import Message, Policy
from selfimprove.telemetry.parse import (
    MalformedVariables,
    SpanParseError,
    load_json,
    parse_invocation_parameters,
    parse_messages,
    parse_prompt_template,
    parse_tools,
)
from selfimprove.telemetry.prompt_template import SystemPrompt, TemplateMismatch, system_prompt

# Invocation parameters a Policy carries (replay sends them), and ones that cannot change the answer. Any other
# parameter a call set (seed, stop, penalties, ...) is not replayed: snapshot counts and names them.
REPLAYED_PARAMS = frozenset({"model", "temperature", "top_p", "max_tokens", "max_completion_tokens",
                             "response_format", "tools", "tool_choice", "parallel_tool_calls"})
INERT_PARAMS = frozenset({"stream", "stream_options", "user", "metadata", "store", "n", "timeout", "extra_headers",
                          "extra_query", "extra_body", "service_tier", "functions"})
BAD_REASONS = ("not_llm", "error_status", "unparseable", "no_input", "no_output", "no_model",
               "template_variables_missing", "template_variables_malformed", "template_mismatch")

POLICY_DIGEST_KEY = "selfimprove.policy_digest"


@dataclass(frozen=True)
class ParsedSpan:
    span_id: str
    trace_id: str
    start_time: datetime | None
    history: tuple[Message, ...]
    output: Message
    policy: Policy
    policy_digest: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tagged_digest: str | None = None  # the digest tag_policy recorded, if any
    extra_outputs: int = 0  # choices beyond the first (n > 1), not kept
    variables: dict[str, Any] | None = None  # the template variables this call filled its system prompt with
    template_version: str | None = None  # llm.prompt_template.version, when the span recorded one
    template_note: str | None = None  # why a recorded template is not the policy's prompt (see prompt_template)
    unreplayed: tuple[str, ...] = ()  # invocation parameters this call set that replay does not send


@dataclass(frozen=True)
class BadSpan:
    span_id: str
    reason: str
    detail: str = ""


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is str:  # the common case: a present text cell
        return False
    if isinstance(value, float) and math.isnan(value):
        return True
    return getattr(value, "__class__", None).__name__ in ("NAType", "NaTType")


def _opt_int(value: Any) -> int | None:
    return None if _missing(value) else int(value)


def _time(value: Any) -> datetime | None:
    if _missing(value):
        return None
    return value.to_pydatetime() if hasattr(value, "to_pydatetime") else value


def policy_of(system: SystemPrompt, params: dict[str, Any], model_name: str | None, tools: Any) -> Policy:
    """The Policy that produced a call. Raises SpanParseError when no model is known."""
    model = params.get("model") or model_name
    if not model:
        raise SpanParseError("no model in the invocation parameters or the span")
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    fmt = params.get("response_format")
    tool_list = params.get("tools") or tools
    choice = params.get("tool_choice") if tool_list else None
    parallel = params.get("parallel_tool_calls") if tool_list else None
    return Policy(system_prompt=system.text, template_format=system.template_format, model=str(model),
                  temperature=_num(params.get("temperature")), top_p=_num(params.get("top_p")),
                  max_tokens=None if max_tokens is None else int(max_tokens),
                  response_format=fmt if isinstance(fmt, dict) else None,
                  tools=tuple(tool_list) if tool_list else None,
                  tool_choice=choice if isinstance(choice, (str, dict)) else None,
                  parallel_tool_calls=parallel if isinstance(parallel, bool) else None)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_span(row: dict[str, Any], policies: dict[tuple, Any] | None = None) -> ParsedSpan | BadSpan:
    """One raw spans row (the columns of `selfimprove.telemetry.raw.SPAN_COLUMNS`) -> ParsedSpan or BadSpan.
    `policies` memoises (Policy, digest) by what determines them, across the rows of one table."""
    span_id = str(row.get("span_id"))
    kind = row.get("span_kind")
    if not _missing(kind) and str(kind).upper() not in ("LLM", "UNKNOWN", ""):
        return BadSpan(span_id, "not_llm", f"span kind {kind}")
    if str(row.get("status_code") or "").upper() == "ERROR":
        return BadSpan(span_id, "error_status", str(row.get("status_message") or "")[:200])
    try:
        history = parse_messages(_none(row.get("input_messages")), "llm.input_messages")
        outputs = parse_messages(_none(row.get("output_messages")), "llm.output_messages")
        params = parse_invocation_parameters(_none(row.get("invocation_parameters")))
        tools = parse_tools(_none(row.get("tools")))
        template = parse_prompt_template(_none(row.get("prompt_template")))
        metadata = load_json(_none(row.get("metadata")), "metadata") or {}
        if not isinstance(metadata, dict):
            raise SpanParseError("metadata is not an object")
    except MalformedVariables as exc:
        return BadSpan(span_id, "template_variables_malformed", _first_line(exc))
    except (SpanParseError, ValidationError, TypeError, ValueError) as exc:
        return BadSpan(span_id, "unparseable", _first_line(exc))
    if not history:
        return BadSpan(span_id, "no_input", "no input messages")
    if not outputs or not _has_answer(outputs[0]):
        return BadSpan(span_id, "no_output", "no output message")
    tagged = metadata.get(POLICY_DIGEST_KEY)
    try:
        system = system_prompt(history, template)
    except TemplateMismatch as exc:
        return BadSpan(span_id, exc.reason, _first_line(exc))
    key = (system.text, system.template_format, str(row.get("invocation_parameters")), str(row.get("model_name")),
           str(row.get("tools")))
    found = policies.get(key) if policies is not None else None
    if found is None:
        try:
            policy = policy_of(system, params, _none(row.get("model_name")), tools)
        except SpanParseError as exc:
            return BadSpan(span_id, "no_model", str(exc))
        except (ValidationError, TypeError, ValueError) as exc:
            return BadSpan(span_id, "unparseable", _first_line(exc))
        found = (policy, policy.digest)
        if policies is not None:
            policies[key] = found
    policy, policy_digest = found
    start, end = _time(row.get("start_time")), _time(row.get("end_time"))
    latency = (end - start).total_seconds() * 1000 if start and end else None
    return ParsedSpan(
        span_id=span_id, trace_id=str(_none(row.get("trace_id")) or span_id), start_time=start,
        history=tuple(history), output=outputs[0], policy=policy, policy_digest=policy_digest,
        prompt_tokens=_opt_int(row.get("prompt_tokens")), completion_tokens=_opt_int(row.get("completion_tokens")),
        latency_ms=None if latency is None else round(latency, 3), model_name=_none(row.get("model_name")),
        metadata=metadata, tagged_digest=str(tagged) if tagged else None, extra_outputs=len(outputs) - 1,
        variables=system.variables, template_version=system.version, template_note=system.note,
        unreplayed=tuple(sorted(k for k in params if k not in REPLAYED_PARAMS and k not in INERT_PARAMS)))


def _none(value: Any) -> Any:
    return None if _missing(value) else value


def _has_answer(message: Message) -> bool:
    if message.tool_calls:
        return True
    if isinstance(message.content, str):
        return message.content.strip() != ""
    return bool(message.content)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
