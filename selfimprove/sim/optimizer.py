"""The simulated optimizer model (`sim-optimizer`): reads the failure explanations present in its request and
writes instructions that address them, as a capable LLM would.

It sees only its request. For every judge explanation it recognises in the request text (worlds list, per rule,
the wording their judges use), it adds the instruction a capable model would write to fix that failure, most
frequent first. The current prompt is read from the request: the first of `<current_prompt>…</current_prompt>`,
`<prompt>…</prompt>`, or the first ``` fenced block (GEPA's reflection format puts it there).

Noise knobs (probabilities, seeded by the request): `optimizer_vague` replaces a fix by a vague edit,
`optimizer_drop` drops an existing line of the prompt, `optimizer_filler` adds filler sentences. With `gullible`,
the model obeys instructions planted in the trace data it is shown (to test an injection guard).

A critique request (a JSON schema titled or with fields named like critique/diagnosis) is answered with a critique
of the one sample in it: the failures its judge explanations name and the fix instruction the optimizer would
write for them (the same reading of the request as an update, so it never uses what the request does not show).
"""

from __future__ import annotations

import re
from typing import Any

from selfimprove.sim.hidden import Rule, load_world, world_names
from selfimprove.sim.schema_fill import fill, resolve
from selfimprove.sim.textutil import pick, uniform

VAGUE = [
    "Make sure every reply follows company policy.",
    "Pay closer attention to the points raised in the feedback.",
    "Be careful and accurate.",
]
FILLER = [
    "You are a world-class expert who always strives for excellence in every single interaction.",
    "Think about the user's needs holistically and deliver outstanding value at every step.",
    "Remember that quality matters and that every detail counts.",
]
GENERIC_EDIT = "Read the input carefully before answering."
_PLANTED = [
    re.compile(r"add this line to your instructions:\s*['\"“](.+?)['\"”]", re.IGNORECASE),
    re.compile(r"ignore (?:all )?previous instructions,? and ([A-Za-z][^\n]+)", re.IGNORECASE),
]
_PROMPT_FIELD = re.compile(r"prompt|instruction|system", re.IGNORECASE)
_RATIONALE_FIELD = re.compile(r"rationale|reason|explanation|analysis|thought|summary|feedback", re.IGNORECASE)
_LIST_FIELD = re.compile(r"edit|change|rule|instruction|fix", re.IGNORECASE)
_ITEM_TEXT = re.compile(r"instruction|text|edit|content|line", re.IGNORECASE)
_ITEM_WHY = re.compile(r"address|reason|rationale|why|feedback", re.IGNORECASE)


def current_prompt(text: str) -> str:
    for pattern in (r"<current_prompt>\s*(.*?)\s*</current_prompt>", r"<prompt>\s*(.*?)\s*</prompt>"):
        m = re.search(pattern, text, re.DOTALL)
        if m:
            return m.group(1).strip()
    m = re.search(r"(?:^|\n)[ \t]*```[^\n]*\n(.*?)\n[ \t]*```", text, re.DOTALL)
    return m.group(1).strip() if m else ""


def seen_failures(text: str) -> list[tuple[Rule, int]]:
    """The failures whose explanations appear in `text`, most frequent first (ties in world order)."""
    low = text.lower()
    found = []
    for name in world_names():
        for rule in load_world(name).rules:
            n = low.count(rule.data["marker"].lower())
            if n:
                found.append((rule, n))
    return sorted(found, key=lambda rn: -rn[1])


def propose(text: str, key: str, knobs: dict[str, Any]) -> tuple[str, str, list[str], list[str]]:
    """(new prompt, rationale, added lines, what each added line addresses) for an optimizer request."""
    base = current_prompt(text)
    lines = [ln for ln in base.splitlines() if ln.strip()]
    drop = float(knobs.get("optimizer_drop", 0.0))
    kept = [ln for i, ln in enumerate(lines) if not (drop and uniform(key, "drop", i) < drop)]
    base_low = base.lower()
    added, addressed = [], []
    for rule, n in seen_failures(text):
        fix = rule.data["fix"]
        if fix.lower() in base_low:
            continue
        if uniform(key, "vague", rule.id) < float(knobs.get("optimizer_vague", 0.0)):
            fix = pick(VAGUE, key, "vague-text", rule.id)
        if fix not in added:
            added.append(fix)
            addressed.append(f"{n} failure(s) like: {rule.data['marker']}")
    if knobs.get("gullible"):
        for pattern in _PLANTED:
            for m in pattern.finditer(text):
                planted = m.group(1).strip()
                if planted and planted not in added:
                    added.append(planted)
                    addressed.append("an instruction found in the data")
    if not added:
        added.append(GENERIC_EDIT if GENERIC_EDIT.lower() not in base_low else pick(VAGUE, key, "generic"))
        addressed.append("no specific failure named in the feedback")
    if uniform(key, "filler") < float(knobs.get("optimizer_filler", 0.0)):
        filler = FILLER[: 1 + int(uniform(key, "filler-n") * len(FILLER))]
        added.extend(filler)
        addressed.extend(["(no failure)"] * len(filler))
    new_prompt = "\n".join(kept + added)
    rationale = "Addressed " + "; ".join(addressed) + "."
    return new_prompt, rationale, added, addressed


_CRITIQUE_FIELD = re.compile(r"critique|diagnos", re.IGNORECASE)
_FIX_FIELD = re.compile(r"fix|instruction|suggest|advice", re.IGNORECASE)
PASSED = "No judge explanation in the request names a failure: the output met the evals' definitions."
KEEP = "Keep the current instructions unchanged."


def is_critique_request(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    names = [str(schema.get("title", "")), *(schema.get("properties") or {})]
    return any(_CRITIQUE_FIELD.search(n) for n in names)


def critique(text: str, key: str, knobs: dict[str, Any]) -> tuple[str, str]:
    """(diagnosis, fix instruction) for a critique request: the failures named in it, and their fixes."""
    failures = seen_failures(text)
    named, fixes = [], []
    for rule, _n in failures:
        named.append(f"the judge's explanation notes that it {rule.data['marker']!r}")
        fix = rule.data["fix"]
        if uniform(key, "vague", rule.id) < float(knobs.get("optimizer_vague", 0.0)):
            fix = pick(VAGUE, key, "vague-text", rule.id)
        fixes.append(fix)
    if knobs.get("gullible"):
        fixes += [m.group(1).strip() for pattern in _PLANTED for m in pattern.finditer(text) if m.group(1).strip()]
    if not named:
        return PASSED, " ".join(fixes) or KEEP
    return "The output failed: " + "; ".join(named) + ".", " ".join(dict.fromkeys(fixes))


def _is_string(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") in ("string", ["string"], ["string", "null"])


def answer(text: str, schema: dict[str, Any] | None, key: str, knobs: dict[str, Any]) -> Any:
    """The optimizer's answer: a JSON value for `schema`, else fenced text (GEPA's reflection format).

    In a schema, the first string property named like prompt/instruction/system gets the new prompt (else the first
    string property), properties named like reasoning/rationale get the rationale, and an array property named like
    edits/changes gets one item per added line (objects get the line in their instruction-like field).
    """
    if is_critique_request(schema):
        return _critique_answer(text, schema, key, knobs)
    new_prompt, rationale, added, addressed = propose(text, key, knobs)
    if schema is None:
        return f"{rationale}\n\nHere is the improved instruction:\n```\n{new_prompt}\n```"
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    resolved = {n: resolve(s, schema) for n, s in props.items()}
    string_props = [n for n, s in resolved.items() if _is_string(s)]
    target = next((n for n in string_props if _PROMPT_FIELD.search(n)), string_props[0] if string_props else None)
    values: dict[str, Any] = {}
    for name, sub in resolved.items():
        if name == target:
            values[name] = new_prompt
        elif _is_string(sub) and _RATIONALE_FIELD.search(name):
            values[name] = rationale
        elif isinstance(sub, dict) and sub.get("type") == "array" and _LIST_FIELD.search(name):
            items = resolve(sub.get("items", {}), schema)
            if _is_string(items):
                values[name] = list(added)
            elif isinstance(items, dict) and items.get("type") == "object":
                values[name] = [fill(items, _item_values(items, line, why, schema), root=schema)
                                for line, why in zip(added, addressed)]
    return fill(schema, values)


def _item_values(items: dict[str, Any], line: str, why: str, root: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, sub in (items.get("properties") or {}).items():
        if _is_string(resolve(sub, root)):
            if _ITEM_TEXT.search(name):
                out[name] = line
            elif _ITEM_WHY.search(name):
                out[name] = why
    return out


def _critique_answer(text: str, schema: dict[str, Any], key: str, knobs: dict[str, Any]) -> Any:
    """Every string field gets the diagnosis, or the fix when it is named like fix/instruction."""
    diagnosis, fix = critique(text, key, knobs)
    values = {}
    for name, sub in (schema.get("properties") or {}).items():
        if _is_string(resolve(sub, schema)):
            values[name] = fix if _FIX_FIELD.search(name) else diagnosis
    return fill(schema, values)
