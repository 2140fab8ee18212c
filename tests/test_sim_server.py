"""The simulator speaks the OpenAI chat-completions protocol to the unmodified openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from selfimprove.sim import default_policy, generate_inputs, start_server


@pytest.fixture(scope="module")
def sim():
    with start_server("support", seed=3) as s:
        yield s


@pytest.fixture()
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)


def _ask(client, content, **kw):
    kw.setdefault("model", "sim-small")
    return client.chat.completions.create(messages=[{"role": "system", "content": "Be helpful."},
                                                    {"role": "user", "content": content}], **kw)


def test_response_has_the_real_shape_and_usage_grows_with_text(client):
    short = _ask(client, "Where is my desk lamp? My order number is #12345.", temperature=0)
    assert short.id.startswith("chatcmpl-") and short.model == "sim-small" and short.object == "chat.completion"
    assert short.choices[0].finish_reason == "stop" and short.choices[0].message.role == "assistant"
    assert short.choices[0].message.content
    u = short.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens > 0
    longer = _ask(client, "Where is my desk lamp? My order number is #12345. " + "It is late. " * 50, temperature=0)
    assert longer.usage.prompt_tokens > u.prompt_tokens + 100


def test_models_endpoint_lists_the_simulated_models(client):
    ids = {m.id for m in client.models.list().data}
    assert {"sim-small", "sim-large", "sim-judge", "sim-optimizer"} <= ids


def test_same_request_same_response_and_temperature_varies_phrasing(client):
    msgs = generate_inputs("support", 40, seed=5)
    pol = default_policy("support")

    def run(m, t):
        return _ask(client, m[0]["content"], temperature=t).choices[0].message.content

    first = [run(m, 0.9) for m in msgs]
    assert first == [run(m, 0.9) for m in msgs]
    assert first != [run(m, 0.0) for m in msgs]  # temperature is part of the request and adds variety
    assert pol["model"] == "sim-small"


def test_seed_changes_the_dice(sim):
    msgs = generate_inputs("support", 30, seed=1)
    with start_server("support", seed=99) as other:
        a = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
        b = openai.OpenAI(base_url=other.base_url, api_key="x", max_retries=0)
        outs_a = [_ask(a, m[0]["content"]).choices[0].message.content for m in msgs]
        outs_b = [_ask(b, m[0]["content"]).choices[0].message.content for m in msgs]
    assert outs_a != outs_b


def test_unknown_model_gets_a_plain_deterministic_reply(client):
    r1 = _ask(client, "hello there", model="gpt-4o-mini")
    r2 = _ask(client, "hello there", model="gpt-4o-mini")
    assert r1.choices[0].message.content == r2.choices[0].message.content
    assert "hello there" in r1.choices[0].message.content and r1.model == "gpt-4o-mini"


def test_json_schema_and_forced_tool_call(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer", "minimum": 3}},
              "required": ["answer", "n"], "additionalProperties": False}
    r = _ask(client, "hi", model="sim-large",
             response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}})
    data = json.loads(r.choices[0].message.content)
    assert isinstance(data["answer"], str) and data["n"] >= 3
    tool = {"type": "function", "function": {"name": "extract", "parameters": schema}}
    r = _ask(client, "hi", tools=[tool], tool_choice={"type": "function", "function": {"name": "extract"}})
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "extract"
    assert json.loads(call.function.arguments)["n"] >= 3


def test_bad_requests_are_400(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sim-small", messages=[])
    with pytest.raises(openai.BadRequestError):
        _ask(client, "hi", tools=[{"type": "function", "function": {"name": "a", "parameters": {}}}],
             tool_choice={"type": "function", "function": {"name": "missing"}})


def test_stats_count_requests_by_model_and_status(sim, client):
    sim.reset_stats()
    for _ in range(3):
        _ask(client, "hi", model="sim-large")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sim-judge", messages=[])
    st = sim.stats()
    assert st["by_model"]["sim-large"] == {"200": 3}
    assert st["by_model"]["sim-judge"] == {"400": 1}
    assert st["by_endpoint"]["/v1/chat/completions"] == 4 and st["tokens"]["sim-large"]["completion"] > 0


def test_max_tokens_truncates_with_finish_reason_length(client):
    r = _ask(client, "Where is my desk lamp? " * 5, max_tokens=5)
    assert r.choices[0].finish_reason == "length" and len(r.choices[0].message.content) <= 20


def test_subprocess_mode_serves_the_same_answers(sim, client):
    with start_server("support", seed=3, mode="subprocess") as sub:
        assert sub.base_url.startswith("http://127.0.0.1:") and sub.base_url.endswith("/v1")
        other = openai.OpenAI(base_url=sub.base_url, api_key="sim", max_retries=0)
        q = "I want a refund for the kettle. My order number is #55555."
        assert _ask(other, q).choices[0].message.content == _ask(client, q).choices[0].message.content
        assert sub.stats()["requests"] == 1
