"""The local llama-server through the real openai SDK: what the rest of the tier relies on."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.real


def test_chat_and_json_schema_through_the_openai_sdk(local_models):
    import openai

    task, _ = local_models
    client = openai.OpenAI(base_url=task.base_url, api_key="local-model-needs-no-key", timeout=300)
    reply = client.chat.completions.create(model=task.model, max_tokens=40, temperature=0, messages=[
        {"role": "user", "content": "Say hello to Ada in one short sentence."}])
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens <= 40
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["label"], "additionalProperties": False}
    graded = client.chat.completions.create(model=task.model, max_tokens=40, temperature=0, messages=[
        {"role": "user", "content": "Is 7 a prime number? Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert json.loads(graded.choices[0].message.content)["label"] in ("yes", "no")  # grammar-constrained
