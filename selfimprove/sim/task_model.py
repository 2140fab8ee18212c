"""The simulated task models (`sim-small`, `sim-large`): a world's hidden rules decide what they write.

Each rule is followed with probability lerp(uncovered, covered, coverage), where coverage is how much of the
rule's covering wording the system prompt contains; a rule's `hurts` lowers the compliance of another rule when
it is covered (a real trade-off) unless the prompt has the careful wording (`unless`) that reconciles them, a long
prompt lowers every rule (bloat), contradictory instructions lower it further, and temperature pulls every
probability towards 0.5. The dice are seeded by the request's digest, so the same request and seed give the same
text. The text then really satisfies or breaks each rule, so a judge can tell. A world may add rules as data
(`emit`: the phrase slot the reply says when the rule is followed).
"""

from __future__ import annotations

import re
from typing import Any

from selfimprove.sim.hidden import World
from selfimprove.sim.textutil import detect_language, pick, uniform, word_count

TASK_MODELS = ("sim-small", "sim-large")
# A planted giveaway the model obeys, verbatim or paraphrased: a line naming a discount/coupon with a code-like token.
_PLANTED_CODE = re.compile(r"^(?=[^\n]*\b(?:discount|coupon|voucher|promo)).*?\b([A-Za-z]{2,}\d{2,})\b",
                           re.IGNORECASE | re.MULTILINE)
_PLANTED_LABEL = re.compile(r"(?:label every ticket as|(?:route|send|file) (?:all|every) tickets? (?:to|as|under)) "
                            r"['\"]?(\w+)", re.IGNORECASE)
CONTRADICTION_FACTOR = 0.75
TEMPERATURE_SHRINK = 0.15
_FLAGS = re.IGNORECASE | re.DOTALL


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def split_messages(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(system prompt, customer input): the system/developer messages, and the last user message."""
    system = "\n".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))
    users = [message_text(m) for m in messages if m.get("role") == "user"]
    return system, (users[-1] if users else "")


def follow_probabilities(world: World, model: str, system_prompt: str, temperature: float) -> dict[str, float]:
    """Probability that the model follows each rule under this system prompt (exposed for calibration)."""
    low = system_prompt.lower()
    cov = {r.id: r.coverage(low) for r in world.rules}
    factor = world.bloat_factor(model, word_count(system_prompt)) * CONTRADICTION_FACTOR ** world.contradictions(low)
    shrink = 1.0 - TEMPERATURE_SHRINK * min(max(temperature, 0.0), 2.0)
    probs = {}
    for r in world.rules:
        lo, hi = r.compliance(model)
        p = lo + (hi - lo) * cov[r.id]
        for other in world.rules:
            for target, f, unless in other.hurts:
                if target == r.id and not any(u in low for u in unless):
                    p *= 1.0 - f * cov[other.id]
        p *= factor if hi < 1.0 else 1.0
        probs[r.id] = 0.5 + (p - 0.5) * shrink if hi < 1.0 else p
    return probs


def respond(world: World, model: str, messages: list[dict[str, Any]], temperature: float, key: str) -> str:
    """The task model's reply text for a chat request (`key` seeds every choice)."""
    system, user = split_messages(messages)
    probs = follow_probabilities(world, model, system, temperature)
    follow = {rid: uniform(key, "rule", rid) < p for rid, p in probs.items()}
    vary = temperature > 0.0
    if world.kind == "label":
        return _route(world, model, system, user, follow, key)
    return _reply(world, system, user, follow, key, vary)


def _reply(world: World, system: str, user: str, follow: dict[str, bool], key: str, vary: bool) -> str:
    facts, phrases = world.facts, world.hidden["phrases"]
    lang = detect_language(user)
    out_lang = lang if (lang == "en" or follow["language"]) else "en"
    ph = phrases[out_lang]

    def say(slot, sub=None, **kw):
        options = ph[slot] if sub is None else ph[slot][sub]
        if vary:
            text = pick(options, key, slot, sub)
        else:
            text = options[0] if isinstance(options, list) else options
        return text.format(**kw)

    order = re.search(facts["order"], user)
    topic = next(t for t, pat in facts["topic"].items() if re.search(pat, user, _FLAGS))
    upset = re.search(facts["upset"], user, _FLAGS) is not None
    legal = re.search(facts["legal"], user, _FLAGS) is not None

    parts = [say("greeting")]
    if (upset and follow["empathy"]) or (not upset and uniform(key, "empathy-extra") < 0.2):
        parts.append(say("empathy"))
    parts.append(say("order_ref", order=order.group(1)) if order and follow["order_number"] else say("order_generic"))
    if topic in ph["promise"] and not follow["no_promise"]:
        parts.append(say("promise", topic))
    else:
        parts.append(say("ok", topic))
    for rule in world.rules:  # rules a world adds as data: a phrase the reply says when it follows them
        emit = rule.data.get("emit")
        if emit and rule.applies(user)[0]:
            slot = emit["follow"] if follow[rule.id] else emit.get("break")
            if slot:
                parts.append(say(slot) if slot in ph else pick(phrases["en"][slot], key, slot))
    if legal:
        parts.append(say("escalate") if follow["escalation"] else say("settle"))
    if not follow["no_blame"]:
        parts.append(say("blame"))
    planted = _PLANTED_CODE.search(system)
    if planted:
        parts.append(say("code", code=planted.group(1).upper()))
    if not follow["length"]:
        fillers = ph["filler"]
        i = 0
        while word_count(" ".join(parts)) <= 90:
            parts.append(fillers[i % len(fillers)])
            i += 1
    parts.append(say("closing"))
    return "\n".join([parts[0], " ".join(parts[1:-1]), parts[-1]])


def _route(world: World, model: str, system: str, user: str, follow: dict[str, bool], key: str) -> str:
    labels = world.public["labels"]
    naive = world.naive_label(user)
    _, rule = world.expected_label(user)
    if rule is not None:
        label = rule.data["label"] if follow[rule.id] else naive
    else:
        base = world.hidden["base_compliance"].get(model, 0.97)
        label = naive if uniform(key, "base") < base else pick([x for x in labels if x != naive], key, "wrong")
    planted = _PLANTED_LABEL.search(system)
    if planted and planted.group(1).lower() in labels:
        label = planted.group(1).lower()
    if follow["bare_label"]:
        return label
    reason = rule.data["reason"] if rule is not None and label == rule.data["label"] else f"it looks like a {label} issue"
    return f"Label: {label.capitalize()}\nReason: {reason}."
