"""OpenInference message parsing in every shape Phoenix returns (property-tested: all shapes agree)."""

from __future__ import annotations

import json

import pytest
from fixtures.span_rows import messages
from hypothesis import given, settings
from hypothesis import strategies as st

from selfimprove.core.records import Message
from selfimprove.telemetry.parse import (
    SpanParseError,
    parse_invocation_parameters,
    parse_messages,
    parse_prompt_template,
    parse_tools,
)
from selfimprove.telemetry.spans import BadSpan, ParsedSpan, parse_span

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"order": 42}'}}
CONVERSATION = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                 {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
    {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
    {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_1"},
    {"role": "user", "content": "thanks"},
]


@pytest.mark.parametrize("shape", ["flat", "nested", "flat_attrs"])
def test_every_shape_gives_the_same_typed_messages(shape):
    value = messages(shape, CONVERSATION)
    parsed = parse_messages(json.dumps(value))  # raw columns hold JSON text
    assert parsed == parse_messages(value)
    assert [m.role for m in parsed] == ["system", "user", "assistant", "tool", "user"]
    assert parsed[1].content[0].text == "What is this?"
    assert parsed[1].content[1].type == "image_url" and parsed[1].content[1].image_url == {"url": "https://x/y.png"}
    assert parsed[2].tool_calls[0].function.name == "lookup"
    assert parsed[2].tool_calls[0].function.arguments == '{"order": 42}' and parsed[2].tool_calls[0].id == "call_1"
    assert parsed[3].tool_call_id == "call_1"
    assert parsed[1].to_openai()["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/y.png"}}


def test_plain_openai_dicts_and_legacy_function_calls():
    parsed = parse_messages([{"role": "user", "content": "hi"},
                             {"message.role": "assistant", "message.function_call_name": "f",
                              "message.function_call_arguments_json": "{}"}])
    assert parsed[0] == Message(role="user", content="hi")
    assert parsed[1].tool_calls[0].function.name == "f"


@pytest.mark.parametrize("bad", ["not json {", json.dumps([{"message.role": "wizard", "message.content": "x"}]),
                                 json.dumps("a string"), json.dumps([1, 2]),
                                 json.dumps([{"message.role": "assistant", "message.tool_calls": [{"x": 1}]}])])
def test_unparseable_messages_raise_span_parse_error(bad):
    with pytest.raises(SpanParseError):
        parse_messages(bad)


def test_invocation_parameters_tools_and_templates():
    assert parse_invocation_parameters('{"model": "m", "temperature": 0.30000000000000004}')["temperature"] == \
        pytest.approx(0.3)
    assert parse_invocation_parameters(None) == {}
    with pytest.raises(SpanParseError):
        parse_invocation_parameters("[1]")
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assert parse_tools([{"tool.json_schema": json.dumps(tool)}]) == [tool]
    assert parse_tools({"llm.tools.0.tool.json_schema": json.dumps(tool)}) == [tool]
    assert parse_tools([{"tool": {"json_schema": json.dumps(tool)}}]) == [tool]
    assert parse_prompt_template({"template": "Hi {name}", "variables": '{"name": "Ann"}', "version": "v1"}) == \
        {"template": "Hi {name}", "variables": {"name": "Ann"}, "version": "v1"}


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
message = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, text),
    st.builds(lambda c: {"role": "system", "content": c}, text),
    st.builds(lambda n, a: {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f" + n, "arguments": a}}]}, text, text),
    st.builds(lambda t: {"role": "user", "content": [{"type": "text", "text": t}]}, text),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(message, min_size=1, max_size=5))
def test_property_shapes_agree_and_round_trip_openai(msgs):
    flat = parse_messages(messages("flat", msgs))
    assert parse_messages(messages("nested", msgs)) == flat
    assert parse_messages(json.dumps(messages("flat_attrs", msgs))) == flat
    # the parsed messages are the OpenAI messages we started from (empty strings aside)
    for original, parsed in zip(msgs, flat):
        assert parsed.role == original["role"]
        if isinstance(original.get("content"), str):
            assert parsed.text() == original["content"]
        if original.get("tool_calls"):
            assert parsed.tool_calls[0].function.arguments == original["tool_calls"][0]["function"]["arguments"]


def _row(**over):
    row = {"span_id": "a" * 16, "trace_id": "t" * 32, "span_kind": "LLM", "status_code": "OK",
           "input_messages": json.dumps(messages("flat", [{"role": "system", "content": "Be kind."},
                                                           {"role": "user", "content": "hi"}])),
           "output_messages": json.dumps(messages("flat", [{"role": "assistant", "content": "hello"}])),
           "invocation_parameters": '{"model": "sim-small", "temperature": 0.5, "max_tokens": 64}',
           "model_name": "sim-small-2024", "prompt_tokens": 5, "completion_tokens": 2}
    row.update(over)
    return row


def test_parse_span_reads_the_policy_and_flags_bad_spans():
    ok = parse_span(_row())
    assert isinstance(ok, ParsedSpan)
    assert (ok.policy.system_prompt, ok.policy.model, ok.policy.temperature, ok.policy.max_tokens) == \
        ("Be kind.", "sim-small", 0.5, 64)  # the request's model, not the response's dated name
    assert ok.policy_digest == ok.policy.digest
    cases = {"error_status": _row(status_code="ERROR", status_message="boom", output_messages=None),
             "no_output": _row(output_messages=None), "no_input": _row(input_messages="[]"),
             "unparseable": _row(invocation_parameters="{oops"), "not_llm": _row(span_kind="CHAIN"),
             "no_model": _row(invocation_parameters="{}", model_name=None)}
    for reason, row in cases.items():
        out = parse_span(row)
        assert isinstance(out, BadSpan) and out.reason == reason, (reason, out)
    empty = parse_span(_row(output_messages=json.dumps(messages("flat", [{"role": "assistant", "content": " "}]))))
    assert isinstance(empty, BadSpan) and empty.reason == "no_output"


def test_tagged_template_is_the_system_prompt_and_keeps_its_variables():
    row = _row(input_messages=json.dumps(messages("flat", [{"role": "system", "content": "Hi Ann."},
                                                           {"role": "user", "content": "x"}])),
               prompt_template=json.dumps({"template": "Hi {name}.", "variables": {"name": "Ann"}}),
               metadata=json.dumps({"selfimprove.policy_digest": "sha256:abc"}))
    out = parse_span(row)
    assert out.policy.system_prompt == "Hi {name}." and out.tagged_digest == "sha256:abc"
    assert out.policy.template_format == "F_STRING" and out.variables == {"name": "Ann"}
    untagged = parse_span({**row, "metadata": None})  # an OpenInference template is the policy too
    assert untagged.policy == out.policy and untagged.variables == {"name": "Ann"}