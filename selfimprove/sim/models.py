"""One chat-completions request in, one OpenAI-shaped response out: routes to the simulated models.

`sim-small`/`sim-large` are the world's task models, `sim-judge` the judge, `sim-optimizer` the optimizer; any
other model name gets a plain deterministic reply. A forced tool call is answered with a tool call, a
`response_format` json_schema with JSON valid against the schema.
"""

from __future__ import annotations

import json
from typing import Any

from selfimprove.core.canonical import canonical_json
from selfimprove.sim import judge as judge_model
from selfimprove.sim import optimizer as optimizer_model
from selfimprove.sim import task_model
from selfimprove.sim.hidden import World
from selfimprove.sim.schema_fill import fill
from selfimprove.sim.textutil import token_count, uniform


class BadRequest(Exception):
    """A request the real API would reject with 400."""


def request_key(body: dict[str, Any], seed: int) -> str:
    import hashlib

    return hashlib.sha256(canonical_json(body) + f"|seed={seed}".encode()).hexdigest()


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for t in tools:
            if (t.get("function") or {}).get("name") == name:
                return t
        raise BadRequest(f"tool_choice names unknown function {name!r}")
    return tools[0]


def _schema(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    rf = body.get("response_format") or {}
    kind = rf.get("type", "text")
    if kind == "json_schema":
        js = rf.get("json_schema") or {}
        if "schema" not in js:
            raise BadRequest("response_format.json_schema.schema is required")
        return kind, js["schema"]
    return kind, None


def complete(body: dict[str, Any], world: World, knobs: dict[str, Any]) -> dict[str, Any]:
    """The response body for a chat-completions request (raises BadRequest for what the real API rejects)."""
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not isinstance(messages, list) or not messages:
        raise BadRequest("'model' (string) and 'messages' (non-empty list) are required")
    if body.get("stream"):
        raise BadRequest("the simulator does not support stream=true")
    key = request_key(body, int(knobs.get("seed", 0)))
    tool = _forced_tool(body)
    fmt, schema = _schema(body)
    if model == "sim-judge" and knobs.get("judge_rejects_response_format") and fmt == "json_schema":
        raise BadRequest("response_format json_schema is not supported by this model")
    text = "\n\n".join(task_model.message_text(m) for m in messages if isinstance(m, dict))
    if tool is not None:
        schema = (tool.get("function") or {}).get("parameters") or {"type": "object", "properties": {}}
    value = _answer(model, body, messages, text, schema, fmt, world, key, knobs)
    if tool is not None:
        args = json.dumps(value, ensure_ascii=False)
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_" + key[:24], "type": "function",
                            "function": {"name": tool["function"]["name"], "arguments": args}}],
        }
        out_text, finish = args, "tool_calls"
    else:
        content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        content, finish = _truncate(content, body.get("max_completion_tokens") or body.get("max_tokens"), schema)
        if model == "sim-judge" and uniform(key, "truncate") < float(knobs.get("judge_truncate_rate", 0.0)):
            content, finish = content[: len(content) // 2], "length"
        message = {"role": "assistant", "content": content, "refusal": None}
        out_text = content
    prompt_tokens = sum(token_count(task_model.message_text(m)) + 4 for m in messages if isinstance(m, dict))
    completion_tokens = token_count(out_text)
    return {
        "id": "chatcmpl-sim-" + key[:24],
        "object": "chat.completion",
        "created": 1_700_000_000 + int(uniform(key, "created") * 10_000_000),
        "model": model,
        "system_fingerprint": "sim",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _truncate(content: str, max_tokens: Any, schema: Any) -> tuple[str, str]:
    if isinstance(max_tokens, int) and schema is None and token_count(content) > max_tokens:
        return content[: max(0, max_tokens * 4)], "length"
    return content, "stop"


def _answer(model, body, messages, text, schema, fmt, world, key, knobs) -> Any:
    if model == "sim-judge":
        enum = None
        if isinstance(schema, dict):
            enum = ((schema.get("properties") or {}).get("label") or {}).get("enum")
        v = judge_model.judge(text, enum, key, float(knobs.get("judge_error_rate", 0.0)))
        if schema is not None:
            return fill(schema, {"label": v.label, "explanation": v.explanation})
        return f"{v.explanation}\nLABEL: {v.label}"
    if model == "sim-optimizer":
        return optimizer_model.answer(text, schema, key, knobs)
    if model in task_model.TASK_MODELS:
        if uniform(key, "degraded") < float(knobs.get("task_degradation", 0.0)):  # the provider's model regressed
            messages = [m for m in messages if m.get("role") not in ("system", "developer")]
        reply = task_model.respond(world, model, messages, float(body.get("temperature", 1.0) or 0.0), key)
    else:
        last = task_model.split_messages(messages)[1] or text
        reply = f"This is {model}, a plain simulated model. You wrote: {' '.join(last.split())[:200]}"
    if schema is not None:
        string_fields = [n for n, s in (schema.get("properties") or {}).items() if isinstance(s, dict)]
        return fill(schema, {n: reply for n in string_fields})
    if fmt == "json_object":
        return {"response": reply}
    return reply
