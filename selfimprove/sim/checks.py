"""How an output text satisfies or breaks a hidden rule: what the simulated judge reads off the text."""

from __future__ import annotations

import re

from selfimprove.sim.hidden import Rule, World
from selfimprove.sim.textutil import LANGUAGE_NAMES, detect_language, word_count

_FLAGS = re.IGNORECASE | re.DOTALL


def _snippet(text: str, n: int = 70) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= n else one_line[: n - 1] + "…"


def check_rule(world: World, rule: Rule, input_text: str, output_text: str) -> tuple[bool, dict[str, str]] | None:
    """None when the rule does not apply to this input; else (satisfied, fields for the explanation template; with
    `detail` when the rule's explanation names the case rather than the rule)."""
    result = _check(world, rule, input_text, output_text)
    if result is not None:
        detail = rule.detail(input_text, result[1])
        if detail is not None:
            result[1]["detail"] = detail
    return result


def _check(world: World, rule: Rule, input_text: str, output_text: str) -> tuple[bool, dict[str, str]] | None:
    applies, match = rule.applies(input_text)
    if not applies:
        return None
    check = rule.data.get("check", {})
    kind = check.get("kind")
    if kind == "contains_input_match":
        wanted = match.group(1) if match and match.groups() else (match.group(0) if match else "")
        return wanted in output_text, {"match": wanted}
    if kind == "forbid_regex":
        m = re.search(check["regex"], output_text, _FLAGS)
        return m is None, {"found": _sentence_around(output_text, m) if m else ""}
    if kind == "require_all":
        ok = all(re.search(p, output_text, _FLAGS) for p in check["regex"])
        if ok and check.get("forbid"):
            ok = re.search(check["forbid"], output_text, _FLAGS) is None
        return ok, {}
    if kind == "max_words":
        n = word_count(output_text)
        return n <= int(check["max"]), {"words": str(n)}
    if kind == "same_language":
        want, got = detect_language(input_text), detect_language(output_text)
        return want == got, {"language": LANGUAGE_NAMES[want], "reply_language": LANGUAGE_NAMES[got]}
    if kind == "exact_label":
        labels = world.public.get("labels", [])
        return output_text.strip() in labels, {"found": _snippet(output_text)}
    raise ValueError(f"rule {rule.id!r} has unknown check kind {kind!r}")


def _sentence_around(text: str, m: re.Match) -> str:
    """The sentence containing a match, as a judge would quote it."""
    start = max(text.rfind(".", 0, m.start()), text.rfind("\n", 0, m.start())) + 1
    end_dot = text.find(".", m.end())
    end = len(text) if end_dot < 0 else end_dot + 1
    return _snippet(text[start:end].strip(), 120)


def parse_label(world: World, output_text: str) -> str | None:
    """The first allowed label named in a router output (case-insensitive), as a lenient reader would find it."""
    labels = world.public.get("labels", [])
    m = re.search(r"\b(" + "|".join(map(re.escape, labels)) + r")\b", output_text, re.IGNORECASE)
    return m.group(1).lower() if m else None
