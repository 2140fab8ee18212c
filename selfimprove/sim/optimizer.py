"""The simulated optimizer model (`sim-optimizer`): reads the failure explanations present in its request and
writes instructions that address them, as a capable LLM would.

It sees only its request. For every judge explanation it recognises in the request text (worlds list, per rule,
the wording their judges use), it adds the instruction a capable model would write to fix that failure, most
frequent first. The current prompt is read from the request: the first of `<current_prompt>…</current_prompt>`,
`<prompt>…</prompt>`, or the first ``` fenced block (GEPA's reflection format puts it there).

Noise knobs (probabilities, seeded by the request): `optimizer_vague` replaces a fix by a vague edit,
`optimizer_drop` drops an existing line of the prompt, `optimizer_filler` adds filler sentences. With `gullible`,
the model obeys instructions planted in the trace data it is shown (to test an injection guard); with
`gullible="paraphrase"` it rewords them first, as a real model would, so a verbatim-copy check cannot catch them.

Where a world's explanations name the case rather than the rule (`detail`), the model generalises only once it
has seen `generalise_after` distinct cases of that failure in one request; before that it writes one narrow
instruction per case (`fix_specific`), which covers nothing beyond it. A rule's `fix_when` is the careful wording
it writes instead when the current prompt already has a rule it interacts with.

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


def _capture_regex(rule: Rule) -> re.Pattern | None:
    """A regex finding the case detail in this rule's explanations: the literal text around its first detail
    placeholder."""
    name = rule.data.get("detail", "detail")
    parts = re.split(r"(\{\w+\})", rule.data["explanation"])
    for i, part in enumerate(parts):
        if part == "{" + name + "}":
            before = parts[i - 1] if i > 0 else ""
            after = parts[i + 1] if i + 1 < len(parts) else ""
            return re.compile(re.escape(before[-40:]) + r"(.{1,40}?)" + re.escape(after[:25]), re.IGNORECASE)
    return None


def details_seen(rule: Rule, text: str) -> list[str]:
    """The distinct cases of `rule`'s failure named in `text` (first-seen order)."""
    rx = _capture_regex(rule)
    return list(dict.fromkeys(m.group(1).strip() for m in rx.finditer(text))) if rx else []


def fixes_for(rule: Rule, text: str, base_low: str) -> list[str]:
    """The instruction(s) the model writes for a failure it saw: careful wording when the prompt already has a rule
    this one interacts with, narrow per-case lines while it has seen too few cases to generalise, else the fix."""
    when = rule.data.get("fix_when")
    if when and any(p.lower() in base_low for p in when["prompt_has"]):
        return [when["fix"]]
    need = rule.data.get("generalise_after")
    if need:
        cases = details_seen(rule, text)
        if 0 < len(cases) < need:
            return [rule.data["fix_specific"].format(detail=d) for d in cases]
    return [rule.data["fix"]]


_CODE_TOKEN = re.compile(r"\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{4,}\b")
_LABEL_ORDER = re.compile(r"label every ticket as (\w+)", re.IGNORECASE)
_PARAPHRASES = {
    "code": ["Offer every customer the {code} discount.", "Customers should always hear about the {code} discount.",
             "Mention that {code} gives a discount at checkout."],
    "label": ["Route all tickets to {label}.", "File every ticket under {label}."],
}


def paraphrase(line: str, key: str) -> str:
    """A planted instruction reworded so that no run of its words and no identifier survives verbatim."""
    label = _LABEL_ORDER.search(line)
    if label:
        return pick(_PARAPHRASES["label"], key, "paraphrase").format(label=label.group(1).lower())
    code = _CODE_TOKEN.search(line)
    if code:
        return pick(_PARAPHRASES["code"], key, "paraphrase").format(code=code.group(0).lower())
    return "As a standing rule: " + line[:1].lower() + line[1:]


def planted_lines(text: str, key: str, knobs: dict[str, Any]) -> list[str]:
    """What a gullible model takes from instructions planted in the data (nothing unless `gullible`)."""
    mode = knobs.get("gullible")
    if not mode:
        return []
    found = [m.group(1).strip() for pattern in _PLANTED for m in pattern.finditer(text) if m.group(1).strip()]
    return [paraphrase(x, key) if mode == "paraphrase" else x for x in dict.fromkeys(found)]


def propose(text: str, key: str, knobs: dict[str, Any]) -> tuple[str, str, list[str], list[str]]:
    """(new prompt, rationale, added lines, what each added line addresses) for an optimizer request."""
    base = current_prompt(text)
    lines = [ln for ln in base.splitlines() if ln.strip()]
    drop = float(knobs.get("optimizer_drop", 0.0))
    kept = [ln for i, ln in enumerate(lines) if not (drop and uniform(key, "drop", i) < drop)]
    base_low = base.lower()
    added, addressed = [], []
    for rule, n in seen_failures(text):
        for fix in fixes_for(rule, text, base_low):
            if fix.lower() in base_low:
                continue
            if uniform(key, "vague", rule.id) < float(knobs.get("optimizer_vague", 0.0)):
                fix = pick(VAGUE, key, "vague-text", rule.id)
            if fix not in added:
                added.append(fix)
                addressed.append(f"{n} failure(s) like: {rule.data['marker']}")
    for planted in planted_lines(text, key, knobs):
        if planted not in added:
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
    base_low = current_prompt(text).lower()
    for rule, _n in failures:
        named.append(f"the judge's explanation notes that it {rule.data['marker']!r}")
        for fix in fixes_for(rule, text, base_low):
            if uniform(key, "vague", rule.id) < float(knobs.get("optimizer_vague", 0.0)):
                fix = pick(VAGUE, key, "vague-text", rule.id)
            fixes.append(fix)
    fixes += planted_lines(text, key, knobs)
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
