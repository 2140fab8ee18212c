"""Produce a JSON value that is valid against a JSON schema (the subset chat APIs use), with chosen field values.

Supports type (also as a list), properties/required, items/minItems/maxItems/uniqueItems, enum, const,
anyOf/oneOf/allOf, $ref into $defs/definitions, string min/maxLength and common formats, number and integer bounds.
"""

from __future__ import annotations

import math
from typing import Any

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        schema, seen = node, seen + 1
    return schema


def _merge_all_of(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part = resolve(part, root)
        for k, v in part.items():
            if k == "properties":
                merged.setdefault("properties", {}).update(v)
            elif k == "required":
                merged["required"] = sorted(set(merged.get("required", [])) | set(v))
            else:
                merged.setdefault(k, v)
    return merged


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    """A cheap check that a caller's value may stand in for a generated one."""
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return value in schema["enum"]
    if any(k in schema for k in ("anyOf", "oneOf", "allOf", "$ref")):
        return False
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    if isinstance(value, str):
        ok_len = schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
        return ok_len and ("string" in types or (t is None and "properties" not in schema and "items" not in schema))
    if isinstance(value, list):  # callers build list items with fill(), so only the count needs checking
        return "array" in types and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf)
    return False


def fill(schema: Any, values: dict[str, Any] | None = None, *, root: Any = None, salt: int = 0) -> Any:
    """A value valid against `schema`; top-level object properties named in `values` get those values when they fit."""
    root = schema if root is None else root
    if schema is True or schema == {} or schema is None:
        return "simulated"
    schema = resolve(schema, root)
    if "allOf" in schema:
        schema = _merge_all_of(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][salt % len(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [resolve(o, root) for o in schema[key]]
            non_null = [o for o in options if o.get("type") != "null"] or options
            return fill(non_null[0], values, root=root, salt=salt)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if t == "object":
        props = schema.get("properties", {})
        out = {}
        for name, sub in props.items():
            given = (values or {}).get(name)
            sub_r = resolve(sub, root)
            out[name] = given if given is not None and _fits(given, sub_r) else fill(sub_r, None, root=root)
        return out
    if t == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", math.inf)
        n = int(min(max(lo, 1), hi))
        items = schema.get("items", {})
        return [fill(items, None, root=root, salt=i) for i in range(n)]
    if t == "string":
        text = _FORMATS.get(schema.get("format", ""), "simulated" if salt == 0 else f"simulated {salt}")
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", math.inf)
        if len(text) < lo:
            text = text + "x" * (lo - len(text))
        if len(text) > hi:
            text = text[: int(hi)] if hi > 0 else ""
            if salt and hi > 0:
                text = (str(salt) + text)[: int(hi)]
        return text
    if t in ("integer", "number"):
        return _number(schema, t == "integer", salt)
    if t == "boolean":
        return salt % 2 == 0
    return None


def _number(schema: dict[str, Any], integer: bool, salt: int) -> int | float:
    lo = schema.get("minimum", -math.inf)
    hi = schema.get("maximum", math.inf)
    if "exclusiveMinimum" in schema:
        lo = max(lo, schema["exclusiveMinimum"] + (1 if integer else 0))
    if "exclusiveMaximum" in schema:
        hi = min(hi, schema["exclusiveMaximum"] - (1 if integer else 0))
    if integer:
        lo = math.ceil(lo) if lo != -math.inf else lo
        hi = math.floor(hi) if hi != math.inf else hi
    excl_lo = not integer and "exclusiveMinimum" in schema and lo == schema["exclusiveMinimum"]
    excl_hi = not integer and "exclusiveMaximum" in schema and hi == schema["exclusiveMaximum"]
    if lo == -math.inf and hi == math.inf:
        v = salt
    elif lo == -math.inf:
        v = hi - 1 - salt if excl_hi or integer else hi - salt
    elif hi == math.inf:
        v = lo + 1 + salt if excl_lo else lo + salt
    else:
        v = (lo + hi) / 2 if not integer else lo + (salt % (int(hi - lo) + 1))
    return int(v) if integer else float(v)
