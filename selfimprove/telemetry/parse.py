"""OpenInference span attributes -> typed chat messages, tool calls, content parts and invocation parameters.

Phoenix returns the same messages in three shapes, and this module accepts each of them (and mixtures):
- flat keys (the default spans frame): `[{"message.role": "user", "message.content": "hi"}, ...]`, with tool calls
  as `"message.tool_calls": [{"tool_call.function.name": ..., "tool_call.id": ...}]`;
- nested (a select query): `[{"message": {"role": "user", "content": "hi", "tool_calls": [{"tool_call":
  {"function": {"name": ...}}}]}}]`;
- fully flattened attributes (`get_spans`, OTLP): `{"llm.input_messages.0.message.role": "user", ...}` or the
  same keys without the `llm.input_messages.` prefix.
Every shape is first brought to the flat-key form (`canonical_messages`), then read into `Message` records.
Values may arrive as JSON text (the raw parquet columns); text that is not JSON raises `SpanParseError`.

Pure: no I/O, no clock; never raises anything but `SpanParseError` for bad input.
"""

from __future__ import annotations

import json
import re
from typing import Any

from selfimprove.core.records import ContentPart, FunctionCall, Message, ToolCall

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_SIMPLE = {"message.role", "message.content", "message.name", "message.tool_call_id"}
_INDEXED = re.compile(r"^(.*?)(?:^|\.)(\d+)(?:\.(.*))?$")


class SpanParseError(ValueError):
    """A span attribute that cannot be read as what it claims to be."""


class MalformedVariables(SpanParseError):
    """`llm.prompt_template.variables` that is not a JSON object."""


def load_json(value: Any, what: str) -> Any:
    """`value` itself, or the JSON it encodes when it is a string; None stays None."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise SpanParseError(f"{what} is not JSON: {value[:60]!r}") from exc


def flatten_keys(obj: Any, prefix: str = "") -> Any:
    """Nested dicts -> one dict of dotted keys; lists are kept as lists with each element flattened."""
    if isinstance(obj, dict) and not prefix and all(isinstance(v, str) or v is None for v in obj.values()):
        return obj  # already flat (the common case): nothing to do
    if isinstance(obj, list):
        return [flatten_keys(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten_keys(value, name))
        else:
            out[name] = flatten_keys(value)
    return out


def unflatten_indexes(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"a.0.b": 1, "a.1.b": 2, "c": 3}` -> `{"a": [{"b": 1}, {"b": 2}], "c": 3}`, recursively (keys after an
    index may hold further indexes). A bare index key (`"0.message.role"`) goes under the key ""."""
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        match = _INDEXED.match(str(key))
        if match is None or match.group(3) is None:
            out[str(key)] = value
            continue
        head, index, rest = match.group(1), int(match.group(2)), match.group(3)
        groups.setdefault(head, {}).setdefault(index, {})[rest] = value
    for head, items in groups.items():
        out[head] = [unflatten_indexes(items[i]) for i in sorted(items)]
    return out


def canonical_messages(value: Any, attribute: str = "llm.input_messages") -> list[dict[str, Any]] | None:
    """Any of the three shapes -> a list of flat-key message dicts (`message.role`, ...); None if absent."""
    value = load_json(value, attribute)
    if value is None:
        return None
    if isinstance(value, dict):  # fully flattened attributes: pick this attribute's indexed keys
        tree = unflatten_indexes(flatten_keys(value))
        for key in (attribute, attribute.removeprefix("llm."), "attributes." + attribute, ""):
            if isinstance(tree.get(key), list):
                value = tree[key]
                break
        else:
            raise SpanParseError(f"{attribute}: a mapping without indexed messages")
    if not isinstance(value, list):
        raise SpanParseError(f"{attribute}: expected a list of messages, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise SpanParseError(f"{attribute}: a message is a {type(item).__name__}, not a mapping")
        inner = item.get("message")
        if len(item) == 1 and isinstance(inner, dict) and all(isinstance(v, str) for v in inner.values()):
            out.append({"message." + k: v for k, v in inner.items()})  # the select-query shape, fast
            continue
        flat = flatten_keys(item)
        if "role" in flat and "message.role" not in flat:  # a plain OpenAI dict
            flat = {f"message.{k}": v for k, v in flat.items()}
        out.append(flat)
    return out


def _indexed_list(flat: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A nested list under `key` in either form: a list value, or `key.0.x` flattened keys."""
    value = flat.get(key)
    if isinstance(value, list):
        return [flatten_keys(v) if isinstance(v, dict) else v for v in value]
    prefix = key + "."
    if not any(k.startswith(prefix) for k in flat):
        return []
    tree = unflatten_indexes({k: v for k, v in flat.items() if k.startswith(key + ".")})
    found = tree.get(key)
    return found if isinstance(found, list) else []


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _content_part(part: Any) -> ContentPart:
    if not isinstance(part, dict):
        raise SpanParseError(f"a content part is a {type(part).__name__}")
    part = {k.removeprefix("message_content."): v for k, v in flatten_keys(part).items()}
    kind = part.get("type") or ("text" if "text" in part else None)
    if kind == "text":
        return ContentPart(type="text", text=_text(part.get("text")) or "")
    if kind in ("image", "image_url"):
        url = part.get("image.image.url") or part.get("image.url") or part.get("image_url.url") \
            or part.get("image_url")
        return ContentPart(type="image_url", image_url={"url": url} if url else {})
    if kind is None:
        raise SpanParseError("a content part has no type")
    extra = {k: v for k, v in part.items() if k != "type" and "." not in k}
    return ContentPart(type=str(kind), **extra)


def _tool_call(call: Any) -> ToolCall:
    if not isinstance(call, dict):
        raise SpanParseError(f"a tool call is a {type(call).__name__}")
    call = {k.removeprefix("tool_call."): v for k, v in flatten_keys(call).items()}
    name = call.get("function.name")
    if not name:
        raise SpanParseError("a tool call has no function name")
    return ToolCall(id=str(call.get("id") or ""),
                    function=FunctionCall(name=str(name), arguments=_text(call.get("function.arguments")) or ""))


def message_from_flat(flat: dict[str, Any]) -> Message:
    """One flat-key OpenInference message -> `Message` (content parts and tool calls included)."""
    role = flat.get("message.role")
    if role not in ROLES:
        raise SpanParseError(f"unknown message role {role!r}")
    if flat.keys() <= _SIMPLE and isinstance(flat.get("message.content", ""), str):
        return Message(role=role, content=flat.get("message.content"), name=flat.get("message.name") or None,
                       tool_call_id=flat.get("message.tool_call_id") or None)
    content: Any = flat.get("message.content")
    parts = _indexed_list(flat, "message.contents")
    if not parts and isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = content  # a plain OpenAI content-part list
    if parts:
        content = [_content_part(p) for p in parts]
    elif content is not None and not isinstance(content, str):
        content = _text(content)
    calls = [_tool_call(c) for c in _indexed_list(flat, "message.tool_calls")]
    if flat.get("message.function_call_name"):  # the legacy function_call field
        calls.append(ToolCall(function=FunctionCall(
            name=str(flat["message.function_call_name"]),
            arguments=_text(flat.get("message.function_call_arguments_json")) or "")))
    return Message(role=role, content=content, name=flat.get("message.name") or None,
                   tool_calls=tuple(calls) or None, tool_call_id=flat.get("message.tool_call_id") or None)


def parse_messages(value: Any, attribute: str = "llm.input_messages") -> list[Message] | None:
    """The messages of one span attribute in any Phoenix shape; None when the attribute is absent."""
    flat = canonical_messages(value, attribute)
    if flat is None:
        return None
    return [message_from_flat(m) for m in flat]


def parse_invocation_parameters(value: Any) -> dict[str, Any]:
    """`llm.invocation_parameters` (a JSON string, or already a dict) -> dict; absent -> {}."""
    params = load_json(value, "llm.invocation_parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise SpanParseError(f"llm.invocation_parameters is a {type(params).__name__}, not an object")
    return params


def parse_tools(value: Any) -> list[dict[str, Any]] | None:
    """`llm.tools` in any shape (`[{"tool.json_schema": "<json>"}]`, nested, flattened) -> OpenAI tool dicts."""
    value = load_json(value, "llm.tools")
    if value is None:
        return None
    if isinstance(value, dict):
        value = unflatten_indexes(flatten_keys(value)).get("llm.tools") or \
            unflatten_indexes(flatten_keys(value)).get("")
    if not isinstance(value, list):
        raise SpanParseError("llm.tools is not a list")
    tools = []
    for item in value:
        flat = flatten_keys(item) if isinstance(item, dict) else {}
        schema = flat.get("tool.json_schema", flat.get("json_schema"))
        if schema is None:
            # not wrapped: a tool dict as the OpenAI SDK takes it, or its flattened keys
            schema = item if isinstance(item, dict) and "tool.json_schema" not in flat else None
        schema = load_json(schema, "llm.tools.json_schema")
        if not isinstance(schema, dict):
            raise SpanParseError("a tool has no JSON schema")
        tools.append(schema)
    return tools or None


def parse_prompt_template(value: Any) -> dict[str, Any] | None:
    """`llm.prompt_template` ({template, variables, version}, variables possibly JSON text) -> dict or None.
    Variables that are not a JSON object raise `MalformedVariables` (the span is counted apart)."""
    value = load_json(value, "llm.prompt_template")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpanParseError("llm.prompt_template is not an object")
    flat = {k.removeprefix("llm.prompt_template."): v for k, v in flatten_keys(value).items()}
    out: dict[str, Any] = {}
    if "template" in flat:
        out["template"] = flat["template"]
    if "version" in flat:
        out["version"] = flat["version"]
    variables = {k[len("variables."):]: v for k, v in flat.items() if k.startswith("variables.")}
    if flat.get("variables") is not None:
        try:
            loaded = load_json(flat["variables"], "llm.prompt_template.variables")
        except SpanParseError as exc:
            raise MalformedVariables(str(exc)) from exc
        if not isinstance(loaded, dict):
            raise MalformedVariables(f"llm.prompt_template.variables is a {type(loaded).__name__}, not an object")
        variables = loaded
    if variables or flat.get("variables") is not None:
        out["variables"] = variables
    return out or None
