"""Annotations -> the LLM spans (samples) they are about, across a trace's span tree.

Apps that wrap their LLM calls in chain or agent spans often log evals on the parent span or on the trace's root.
Each eval has a join mode:
- `span`: only an annotation on the LLM span itself counts;
- `parent`: only one on the LLM span's direct parent;
- `root`: only one on the trace's root span;
- `trace`: only a trace-level annotation (Phoenix trace annotations, Arize trace evals: in the raw annotations
  table under the span id `trace:<trace id>`);
- `auto` (default): the LLM span's own annotation, else the nearest annotated ancestor's, else the trace's.
An annotation on an ancestor is about one LLM call, never copied onto several: when the ancestor covers several
LLM spans, the target's `Selector` picks one (the spans matching its name and metadata, then the first or last by
start time) and the case is counted as ambiguous. When the picked span has a closer verdict of the same eval (its
own, or a nearer ancestor's under `auto`), the closer one wins and the farther one is counted
(`covered_by_closer`): it is never handed to another span instead. Every annotation that reaches no LLM span is counted by reason
(`Unjoined`), never dropped silently. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JoinMode = Literal["auto", "span", "parent", "root", "trace"]
JOIN_MODES: tuple[str, ...] = ("auto", "span", "parent", "root", "trace")
TRACE_PREFIX = "trace:"  # the span id a trace-level annotation is stored under: trace:<trace id>
# why an annotation reached no LLM span
UNJOINED_REASONS = ("unknown_span", "outside_window", "no_llm_span_below", "covered_by_closer", "join_mode",
                    "not_a_root")


@dataclass(frozen=True, slots=True)
class Node:
    """One span of a trace tree. `target` marks the pulled LLM spans (the samples); `order` sorts spans by time
    (start time, then id); `metadata` is what the selector may match on."""

    span_id: str
    parent_id: str | None
    trace_id: str
    name: str = ""
    llm: bool = False
    target: bool = False
    order: tuple[Any, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Selector:
    """Which LLM span of several under one annotated ancestor an annotation is about."""

    span_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    pick: Literal["first", "last"] = "last"

    def choose(self, spans: list[Node]) -> list[Node]:
        """The spans that match name and metadata (all of them when none does), in time order."""
        hits = [s for s in spans if (self.span_name is None or s.name == self.span_name)
                and all(str(s.metadata.get(k)) == str(v) for k, v in self.metadata.items())]
        return sorted(hits or spans, key=lambda s: (s.order, s.span_id))

    def describe(self) -> str:
        parts = [f"name {self.span_name!r}"] if self.span_name else []
        parts += [f"metadata {k}={v}" for k, v in sorted(self.metadata.items())]
        return f"the {self.pick} LLM span" + (f" matching {', '.join(parts)}" if parts else "") + " by start time"


@dataclass
class Joined:
    """`results`: target span id -> eval -> verdict. `ways`: eval -> how its annotations joined ('span',
    'parent', 'root', 'ancestor', 'trace') -> count. `unjoined`: reason -> annotations that reached no LLM span.
    `ambiguous`: eval -> annotations whose ancestor covered several LLM spans (one was picked)."""

    results: dict[str, dict[str, Any]]
    ways: dict[str, dict[str, int]]
    unjoined: dict[str, int]
    ambiguous: dict[str, int]
    examples: dict[str, str] = field(default_factory=dict)


def _ancestors(node: Node, nodes: Mapping[str, Node]) -> list[Node]:
    """Parent first, root last; stops at a missing parent or a cycle."""
    out, seen, current = [], {node.span_id}, node
    while current.parent_id and current.parent_id in nodes and current.parent_id not in seen:
        current = nodes[current.parent_id]
        seen.add(current.span_id)
        out.append(current)
    return out


def join_annotations(nodes: Mapping[str, Node], results: Mapping[str, Mapping[str, Any]],
                     modes: Mapping[str, str] | None = None, default: str = "auto",
                     selector: Selector | None = None) -> Joined:
    """Join `results` (annotated span id -> eval -> verdict) onto the target nodes; see the module docstring."""
    modes, selector = modes or {}, selector or Selector()
    targets = sorted((n for n in nodes.values() if n.target), key=lambda n: n.span_id)
    chains: dict[str, list[Node]] = {}  # target -> its ancestors, for targets that have any
    below: dict[str, list[Node]] = {}  # annotated ancestor or trace -> the targets under it
    for t in targets:  # only what an annotation needs: memory grows with the annotated ancestors, not the spans
        ancestors = _ancestors(t, nodes)
        if ancestors:
            chains[t.span_id] = ancestors
        for key in [a.span_id for a in ancestors] + [TRACE_PREFIX + t.trace_id]:
            if key in results:
                below.setdefault(key, []).append(t)
    out: dict[str, dict[str, Any]] = {}
    ways: dict[str, Counter] = {}
    unjoined: Counter = Counter()
    ambiguous: Counter = Counter()
    examples: dict[str, str] = {}

    def miss(reason: str, span_id: str, name: str) -> None:
        unjoined[reason] += 1
        examples.setdefault(reason, f"{name} on span {span_id}")

    for span_id in sorted(results):
        node = nodes.get(span_id)
        for name, verdict in sorted(results[span_id].items()):
            mode = modes.get(name, default)
            if span_id.startswith(TRACE_PREFIX):
                if mode not in ("auto", "trace"):
                    miss("join_mode", span_id, name)
                    continue
                under = below.get(span_id, [])
                if not under:
                    miss("no_llm_span_below", span_id, name)
                    continue
                picked = _pick(selector, under)
                if mode == "auto" and (name in results.get(picked.span_id, {}) or any(
                        name in results.get(a.span_id, {}) for a in chains.get(picked.span_id, []))):
                    miss("covered_by_closer", span_id, name)  # the outermost fallback comes last
                    continue
                _assign(out, ways, ambiguous, under, picked, name, verdict, "trace")
            elif mode == "trace":
                miss("join_mode", span_id, name)
            elif node is None:
                miss("unknown_span", span_id, name)
            elif node.target:
                if mode in ("auto", "span"):
                    out.setdefault(span_id, {})[name] = verdict
                    ways.setdefault(name, Counter())["span"] += 1
                else:
                    miss("join_mode", span_id, name)
            elif mode == "span":
                miss("join_mode", span_id, name)
            elif mode == "root" and node.parent_id:
                miss("not_a_root", span_id, name)
            else:
                under = below.get(span_id, [])
                if mode == "parent":
                    under = [t for t in under if t.parent_id == span_id]
                if not under:
                    miss("outside_window" if node.llm else "no_llm_span_below", span_id, name)
                    continue
                picked = _pick(selector, under)
                if mode == "auto" and (name in results.get(picked.span_id, {}) or next(
                        a.span_id for a in chains[picked.span_id] if name in results.get(a.span_id, {})) != span_id):
                    miss("covered_by_closer", span_id, name)
                    continue
                way = "parent" if picked.parent_id == span_id else "root" if not node.parent_id else "ancestor"
                _assign(out, ways, ambiguous, under, picked, name, verdict, way)
    return Joined(out, {k: dict(sorted(v.items())) for k, v in sorted(ways.items())}, dict(sorted(unjoined.items())),
                  dict(sorted(ambiguous.items())), examples)


def _pick(selector: Selector, under: list[Node]) -> Node:
    ordered = selector.choose(under)
    return ordered[-1] if selector.pick == "last" else ordered[0]


def _assign(out: dict[str, dict[str, Any]], ways: dict[str, Counter], ambiguous: Counter, under: list[Node],
            picked: Node, name: str, verdict: Any, way: str) -> None:
    """Give `verdict` to `picked` (one of `under`); count the way and, when it had a choice, the ambiguity."""
    if len(under) > 1:
        ambiguous[name] += 1
    out.setdefault(picked.span_id, {})[name] = verdict
    ways.setdefault(name, Counter())[way] += 1
