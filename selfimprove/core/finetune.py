"""What was learned, as fine-tuning data: supervised examples in the OpenAI chat fine-tuning format and preference
pairs in the OpenAI preference (DPO) format. Pure: records in, JSON-ready dicts out.

- `sft_example`: `{"messages": [...]}` — the messages the call sent and the assistant's answer last (tool calls
  kept), plus `tools` and `parallel_tool_calls` when the policy has tools.
- `preference_pair`: `{"input": {"messages": [...]}, "preferred_output": [assistant], "non_preferred_output":
  [assistant]}` — one input, the better-scored answer preferred.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import Message, Policy, Sample

ROLES = ("system", "developer", "user", "assistant", "tool")


def production_messages(sample: Sample) -> list[dict[str, Any]]:
    """The messages production sent (its own system prompt included), as recorded on the span."""
    return [m.to_openai() for m in sample.history]


def replay_messages(policy: Policy, sample: Sample) -> list[dict[str, Any]]:
    """The messages a replay of `sample` under `policy` sends (its system prompt rendered for the call)."""
    return policy.messages_for(sample.history, sample.variables)


def sft_example(messages: Sequence[dict[str, Any]], answer: Message, policy: Policy | None = None) -> dict[str, Any]:
    """One supervised example: the input messages, then the answer. ValueError when the answer is empty."""
    out = answer.to_openai()
    if not out.get("content") and not out.get("tool_calls"):
        raise ValueError("an empty answer is no training example")
    example: dict[str, Any] = {"messages": [*messages, out]}
    if policy is not None and policy.tools:
        example["tools"] = list(policy.tools)
        if policy.parallel_tool_calls is not None:
            example["parallel_tool_calls"] = policy.parallel_tool_calls
    return example


def preference_pair(messages: Sequence[dict[str, Any]], preferred: str, non_preferred: str) -> dict[str, Any]:
    """One preference example; ValueError when the two answers are the same text (nothing to prefer)."""
    if preferred == non_preferred:
        raise ValueError("the two answers are the same")
    return {"input": {"messages": list(messages)},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": non_preferred}]}


def chat_format_errors(example: dict[str, Any]) -> list[str]:
    """What makes `example` invalid in the chat fine-tuning format (empty when valid): a messages list of known
    roles with string content (or an assistant's tool calls), at least one user turn, the answer last."""
    msgs = example.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return ["no messages list"]
    errors = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            errors.append(f"message {i}: unknown role {m.get('role') if isinstance(m, dict) else m!r}")
            continue
        content = m.get("content")
        if not (isinstance(content, str) or (isinstance(content, list) and content)) and not m.get("tool_calls"):
            errors.append(f"message {i}: no content")
        extra = set(m) - {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
        if extra:
            errors.append(f"message {i}: unknown keys {sorted(extra)}")
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in msgs):
        errors.append("no user message")
    if not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
        errors.append("the last message is not the assistant's")
    return errors
