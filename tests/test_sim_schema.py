"""JSON answers are valid against randomly generated schemas (checked by an independent mini validator)."""

from __future__ import annotations

import json

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfimprove.sim import start_server
from selfimprove.sim.schema_fill import fill


def validate(value, schema, root=None) -> list[str]:
    """Errors of `value` against `schema` (the subset the generator below produces)."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return validate(value, root["$defs"][name], root)
    if "const" in schema and value != schema["const"]:
        return [f"{value!r} != const"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{value!r} not in enum"]
    if "anyOf" in schema:
        return [] if any(not validate(value, s, root) for s in schema["anyOf"]) else ["anyOf"]
    t = schema.get("type")
    types = t if isinstance(t, list) else [t] if t else []
    checks = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
              "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list)}
    if types and not any(checks[x](value) for x in types):
        return [f"{value!r} is not {types}"]
    errs = []
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9):
        errs.append("string length")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append("minimum")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append("maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errs.append("exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errs.append("exclusiveMaximum")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errs += [f"missing {k}" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errs += [f"extra {k}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], root)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 10**9):
            errs.append("array length")
        for v in value:
            errs += validate(v, schema.get("items", {}), root)
    return errs


names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


@st.composite
def scalar(draw):
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean", "null", "enum", "const", "nullable"]))
    if kind == "string":
        lo = draw(st.integers(0, 20))
        s = {"type": "string", "minLength": lo}
        if draw(st.booleans()):
            s["maxLength"] = lo + draw(st.integers(0, 5))
        return s
    if kind in ("integer", "number"):
        s = {"type": kind}
        lo = draw(st.integers(-1000, 1000))
        if draw(st.booleans()):
            s["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = lo
        if draw(st.booleans()):
            s["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = lo + draw(st.integers(2, 50))
        return s
    if kind == "enum":
        return {"type": "string", "enum": draw(st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True))}
    if kind == "const":
        return {"const": draw(st.one_of(st.integers(), st.text(max_size=5), st.booleans()))}
    if kind == "nullable":
        return {"type": ["string", "null"]}
    return {"type": kind}


def schemas():
    return st.recursive(
        scalar(),
        lambda children: st.one_of(
            st.dictionaries(names, children, max_size=5).map(
                lambda props: {"type": "object", "properties": props, "required": sorted(props),
                               "additionalProperties": False}),
            st.tuples(children, st.integers(0, 3), st.integers(0, 3)).map(
                lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}),
            st.lists(children, min_size=1, max_size=3).map(lambda opts: {"anyOf": opts}),
        ),
        max_leaves=12,
    )


@settings(max_examples=150, deadline=None)
@given(schemas())
def test_fill_is_valid_for_random_schemas(schema):
    value = fill(schema)
    json.dumps(value)
    assert validate(value, schema) == []


def test_refs_into_defs_are_followed():
    schema = {"$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5}},
                                 "required": ["n"], "additionalProperties": False}},
              "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"},
                                                         "minItems": 2}},
              "required": ["items"], "additionalProperties": False}
    assert validate(fill(schema), schema) == []


@pytest.fixture(scope="module")
def client():
    with start_server("routing") as s:
        yield openai.OpenAI(base_url=s.base_url, api_key="sim", max_retries=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas().filter(lambda s: s.get("type") == "object"),
       model=st.sampled_from(["sim-small", "sim-large", "sim-judge", "sim-optimizer", "other-model"]))
def test_every_model_answers_json_schema_requests_validly(client, schema, model):
    rf = {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": schema}}
    r = client.chat.completions.create(model=model, response_format=rf,
                                       messages=[{"role": "user", "content": "Someone hacked my account."}])
    assert validate(json.loads(r.choices[0].message.content), schema) == []
