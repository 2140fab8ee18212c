"""The hidden side of a world: its rules, when they apply, what covers them in a prompt.

Only the simulator's own models (task model, judge, optimizer) read this module. Nothing outside
`selfimprove/sim/` may import it (tests/test_sim_isolation.py checks this): the optimizer under test must learn
the rules from the judges' explanations, as it would in production.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from selfimprove.sim.textutil import detect_language

_FLAGS = re.IGNORECASE | re.DOTALL


@dataclass(frozen=True)
class Rule:
    """One hidden requirement. `eval` names the judge that checks it; `cover` is the prompt wording that makes the
    task model follow it (a list of phrase groups; each group counts when any of its phrases is in the prompt)."""

    id: str
    eval: str
    kind: str
    data: dict[str, Any]
    applies_re: re.Pattern | None
    applies_not_re: re.Pattern | None
    always: bool
    not_language: str | None
    cover: tuple[tuple[str, ...], ...]
    hurts: tuple[tuple[str, float, tuple[str, ...]], ...]  # (rule it hurts, factor, wording that avoids the hurt)

    def applies(self, input_text: str) -> tuple[bool, re.Match | None]:
        """Whether the rule is in force for this customer input (and the input's match, for explanations)."""
        if self.always:
            return True, None
        if self.not_language is not None:
            return detect_language(input_text) != self.not_language, None
        m = self.applies_re.search(input_text) if self.applies_re else None
        if m is None:
            return False, None
        if self.applies_not_re is not None and self.applies_not_re.search(input_text):
            return False, None
        return True, m

    def coverage(self, prompt_lower: str) -> float:
        """Fraction of cover groups the (lower-cased) prompt mentions; 0 for a rule nothing can cover."""
        if not self.cover:
            return 0.0
        hit = sum(any(p in prompt_lower for p in group) for group in self.cover)
        return hit / len(self.cover)

    def detail(self, input_text: str, fields: dict[str, str]) -> str | None:
        """The case detail an instance-level explanation names (`detail`: an explanation field; `detail_regex`: the
        input's first match), or None for a rule whose explanation names the rule itself."""
        if "detail" in self.data:
            return fields.get(self.data["detail"])
        if "detail_regex" in self.data:
            m = re.search(self.data["detail_regex"], input_text, _FLAGS)
            return (m.group(1) if m.groups() else m.group(0)) if m else None
        return None

    def compliance(self, model: str) -> tuple[float, float]:
        table = self.data["compliance"]
        lo, hi = table.get(model) or table["sim-small"]
        return float(lo), float(hi)


@dataclass(frozen=True)
class World:
    name: str
    kind: str
    data: dict[str, Any]
    rules: tuple[Rule, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden(self) -> dict[str, Any]:
        return self.data["hidden"]

    @property
    def public(self) -> dict[str, Any]:
        return self.data["public"]

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def rules_for(self, eval_name: str) -> list[Rule]:
        return [r for r in self.rules if r.eval == eval_name]

    def contradictions(self, prompt_lower: str) -> int:
        """How many contradictory instruction pairs the prompt contains."""
        n = 0
        for left, right in self.hidden.get("contradictions", []):
            if any(p in prompt_lower for p in left) and any(p in prompt_lower for p in right):
                n += 1
        return n

    def bloat_factor(self, model: str, prompt_words: int) -> float:
        """Compliance multiplier for a long system prompt: 1 up to `free_words`, then down to a floor."""
        table = self.hidden.get("bloat", {})
        b = table.get(model) or table.get("sim-small")
        if not b or prompt_words <= b["free_words"]:
            return 1.0
        return max(b["floor"], 1.0 - b["per_100_words"] * (prompt_words - b["free_words"]) / 100.0)

    # routing worlds
    def naive_label(self, input_text: str) -> str:
        for label, pattern in self.hidden["base_labels"]:
            if re.search(pattern, input_text, _FLAGS):
                return label
        return self.hidden["base_labels"][-1][0]

    def expected_label(self, input_text: str) -> tuple[str, Rule | None]:
        """The label the hidden policy requires, and the edge-case rule that decided it (None for a base ticket)."""
        for r in self.rules:
            if r.kind == "label_policy" and r.applies(input_text)[0]:
                return r.data["label"], r
        return self.naive_label(input_text), None


def _rule(d: dict[str, Any]) -> Rule:
    a = d.get("applies", {})
    return Rule(
        id=d["id"],
        eval=d["eval"],
        kind=d["kind"],
        data=d,
        applies_re=re.compile(a["input_regex"], _FLAGS) if "input_regex" in a else None,
        applies_not_re=re.compile(a["input_not_regex"], _FLAGS) if "input_not_regex" in a else None,
        always=bool(a.get("always")),
        not_language=a.get("input_language_not"),
        cover=tuple(tuple(p.lower() for p in g) for g in d.get("cover", [])),
        hurts=tuple((h["rule"], float(h["factor"]), tuple(p.lower() for p in h.get("unless", [])))
                    for h in d.get("hurts", [])),
    )


def world_names() -> list[str]:
    files = resources.files("selfimprove.sim").joinpath("worlds").iterdir()
    return sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json"))


@functools.cache
def load_world(name: str) -> World:
    """The full world (public and hidden parts), parsed once per process."""
    if name not in world_names():
        raise KeyError(f"unknown simulator world {name!r}; known: {', '.join(world_names())}")
    text = resources.files("selfimprove.sim").joinpath("worlds").joinpath(f"{name}.json").read_text("utf-8")
    data = json.loads(text)
    rules = tuple(_rule(d) for d in data["hidden"]["rules"])
    return World(name=data["name"], kind=data["kind"], data=data, rules=rules, facts=data["hidden"].get("facts", {}))
