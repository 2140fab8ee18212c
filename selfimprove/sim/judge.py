"""The simulated judge (`sim-judge`): recognises which world and eval a rendered template belongs to, reads the
input and output back out of it, and decides from the text alone, naming what went wrong as a real judge would.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from selfimprove.sim.checks import check_rule, parse_label
from selfimprove.sim.hidden import World, load_world, world_names
from selfimprove.sim.textutil import uniform, word_count

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}|\{(\w+)\}")


@dataclass(frozen=True)
class Verdict:
    label: str
    explanation: str
    eval_name: str | None = None
    world: str | None = None


def _template_regex(template: str) -> re.Pattern:
    parts, last, names = [], 0, []
    for m in _PLACEHOLDER.finditer(template):
        name = m.group(1) or m.group(2)
        parts.append(re.escape(template[last : m.start()]))
        parts.append(f"(?P<{name}>.*?)" if name not in names else ".*?")
        names.append(name)
        last = m.end()
    parts.append(re.escape(template[last:]))
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


@functools.lru_cache(maxsize=1)
def _known_templates() -> list[tuple[World, dict, re.Pattern]]:
    out = []
    for name in world_names():
        w = load_world(name)
        for ev in w.public["evals"]:
            out.append((w, ev, _template_regex(ev["template"])))
    return out


def identify(text: str) -> tuple[World, dict, dict[str, str]] | None:
    """(world, eval, variables) for a rendered template of one of the worlds' evals, else None."""
    text = text.replace("\r\n", "\n").strip()
    for w, ev, rx in _known_templates():
        m = rx.match(text)
        if m:
            return w, ev, {k: v.strip() for k, v in m.groupdict().items()}
    return None


def _pick_label(enum: list[str] | None, eval_choices: list[str], good: bool) -> str:
    wanted = eval_choices[0] if good else eval_choices[-1]
    if not enum:
        return wanted
    if wanted in enum:
        return wanted
    return enum[0] if good else enum[-1]


def judge(text: str, enum: list[str] | None, key: str, error_rate: float = 0.0) -> Verdict:
    """Judge a rendered eval prompt. `enum` is the label set the caller's schema allows (None if free text)."""
    found = identify(text)
    if found is None:
        options = enum or ["yes", "no"]
        label = options[int(uniform(key, "unknown-template") * len(options))]
        return Verdict(label, "I could not find a clear problem or strength in the text; this is a guess.")
    world, ev, variables = found
    good, explanation = _decide(world, ev["name"], variables.get("input", ""), variables.get("output", ""))
    good, explanation = _world_noise(world, ev["name"], variables.get("output", ""), good, explanation, key)
    if error_rate > 0 and uniform(key, "judge-error") < error_rate:
        good = not good
        explanation = (
            "The output looks acceptable overall." if good else "The output seems to miss part of what is required."
        )
    choices = list(ev["choices"])
    return Verdict(_pick_label(enum, choices, good), explanation, ev["name"], world.name)


def _world_noise(world: World, eval_name: str, output: str, good: bool, explanation: str,
                 key: str) -> tuple[bool, str]:
    """A world's judges may be noisy (`flip`: a verdict turned over at `rate`) and wrong in a biased way (a pass
    failed with a set explanation at `rate`, e.g. only for replies of at most `when_max_words` words). Seeded by the
    request, so the same output gets the same wrong verdict again, as from a real judge at temperature 0."""
    for i, noise in enumerate(world.hidden.get("judge_noise", [])):
        if noise["eval"] not in ("*", eval_name) or uniform(key, "world-noise", i) >= noise["rate"]:
            continue
        if noise.get("flip"):
            good = not good
            explanation = ("The output looks acceptable overall." if good
                           else "The output seems to miss part of what is required.")
        elif good and word_count(output) <= noise.get("when_max_words", 10**9):
            good, explanation = False, noise["explanation"]
    return good, explanation


def _decide(world: World, eval_name: str, input_text: str, output_text: str) -> tuple[bool, str]:
    if world.kind == "label" and eval_name == world.public["evals"][0]["name"]:
        return _decide_label(world, input_text, output_text)
    problems = []
    for rule in world.rules_for(eval_name):
        result = check_rule(world, rule, input_text, output_text)
        if result is not None and not result[0]:
            problems.append(rule.data["explanation"].format(**result[1]))
    if not problems:
        return True, f"The output meets every {eval_name.replace('_', ' ')} requirement: nothing in it breaks the guidelines."
    return False, " ".join(problems)


def _decide_label(world: World, input_text: str, output_text: str) -> tuple[bool, str]:
    predicted = parse_label(world, output_text)
    if predicted is None:
        return False, world.hidden["no_label_explanation"]
    expected, rule = world.expected_label(input_text)
    if predicted == expected:
        return True, f"The ticket belongs in '{expected}', and that is the label the router chose."
    if rule is not None:
        return False, rule.data["explanation"].format(predicted=predicted, expected=expected)
    return False, world.hidden["base_explanation"].format(predicted=predicted, expected=expected)
