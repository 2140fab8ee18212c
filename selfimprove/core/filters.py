"""The snapshot filter chain: `KEY OP VALUE` expressions, all of which a sample must match. Pure.

Keys: `model` (the policy's model), `policy` (a policy digest or a prefix of one, `sha256:` optional), `since` /
`until` (start time, ISO; `until` exclusive; naive = UTC), `score.<eval>` (numeric), `label.<eval>`,
`metadata.<key>` (dotted keys reach into nested span metadata). Operators: `=`, `!=`, `<`, `<=`, `>`, `>=`, and
`~` (contains). A sample without the value a filter reads does not match it (except with `!=`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from selfimprove.core.errors import UsageError

_EXPR = re.compile(r"^\s*([A-Za-z_][\w.:/-]*)\s*(<=|>=|!=|=|<|>|~)\s*(.*?)\s*$")
_KEYS = ("model", "policy", "since", "until")
_PREFIXES = ("score.", "label.", "metadata.")


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_filter(text: str) -> Filter:
    match = _EXPR.match(text)
    if not match:
        raise UsageError(f"cannot read filter {text!r}", hint="write KEY OP VALUE, e.g. score.correctness<0.5")
    key, op, value = match.groups()
    if key in ("since", "until"):
        op = ">=" if key == "since" else "<"
    if key not in _KEYS and not key.startswith(_PREFIXES):
        raise UsageError(f"unknown filter key {key!r} in {text!r}",
                         hint="use model, policy, since, until, score.<eval>, label.<eval> or metadata.<key>")
    if key.startswith("score.") and op != "~":
        try:
            float(value)
        except ValueError:
            raise UsageError(f"filter {text!r}: {value!r} is not a number") from None
    if key in ("since", "until"):
        _time(value, text)
    return Filter(key, op, value)


def _time(value: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"filter {text!r}: {value!r} is not an ISO date or datetime") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "~":
        return str(expected) in str(actual)
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    try:
        return {"<": actual < expected, "<=": actual <= expected, ">": actual > expected,
                ">=": actual >= expected}[op]
    except TypeError:
        return False


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    if dotted in tree:
        return tree[dotted]
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def matches(f: Filter, fields: dict[str, Any]) -> bool:
    """Does a sample match `f`? `fields`: model, policy_digest, start_time (aware datetime), evals
    ({name: EvalResult-like with .label/.score}), metadata (dict)."""
    if f.key == "model":
        actual, expected = fields.get("model"), f.value
    elif f.key == "policy":
        digest = str(fields.get("policy_digest") or "")
        want = f.value if f.value.startswith("sha256:") else "sha256:" + f.value
        hit = digest.startswith(want)
        return not hit if f.op == "!=" else hit
    elif f.key in ("since", "until"):
        actual, expected = fields.get("start_time"), _time(f.value, str(f))
        if actual is None:
            return False
    elif f.key.startswith(("score.", "label.")):
        result = (fields.get("evals") or {}).get(f.key.split(".", 1)[1])
        if f.key.startswith("score."):
            actual = None if result is None else result.score
            expected = f.value if f.op == "~" else float(f.value)
        else:
            actual, expected = (None if result is None else result.label), f.value
    else:
        actual = _lookup(fields.get("metadata") or {}, f.key[len("metadata."):])
        expected = f.value
        if actual is not None and not isinstance(actual, str):
            actual = str(actual).lower() if isinstance(actual, bool) else str(actual)
    if actual is None:
        return f.op == "!="
    return _compare(actual, f.op, expected)
