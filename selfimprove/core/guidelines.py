"""Guidelines: a prompt's instruction lines, each identified by a short content digest.

A guideline is one non-empty line of a system prompt with its list marker (`-`, `*`, `•`, `1.`, `2)`) removed and
its whitespace collapsed; its id is `g-` and the first 10 hex digits of the digest of that normalised text, so the
same instruction has the same id in every prompt and build whatever its bullet or indentation. A per-target
dictionary (id -> text) is then just the union over the prompts seen. The diff of two prompts by guideline
(`guideline_change`) is what a hypothesis records as its change and what ablation removes one line at a time.
"""

from __future__ import annotations

import re

from selfimprove.core.canonical import digest, short
from selfimprove.core.records import Record

_MARKER = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+")
_SPACE = re.compile(r"\s+")


class Guideline(Record):
    """One instruction line: its id (`g-<10 hex>`) and its normalised text."""

    id: str
    text: str


class GuidelineChange(Record):
    """How a prompt changed by guideline: the lines the test prompt added and the lines it dropped."""

    added: tuple[Guideline, ...] = ()
    removed: tuple[Guideline, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed


def normalize_line(line: str) -> str:
    """A line without its list marker, whitespace collapsed ('' for a blank line or a bare marker)."""
    return _SPACE.sub(" ", _MARKER.sub("", line)).strip()


def guideline_id(text: str) -> str:
    return "g-" + short(digest(normalize_line(text).encode("utf-8")), 10)


def split_guidelines(prompt: str) -> tuple[Guideline, ...]:
    """The prompt's guidelines in order, each once (a repeated line is one guideline)."""
    seen: dict[str, Guideline] = {}
    for line in prompt.splitlines():
        text = normalize_line(line)
        if text:
            g = Guideline(id=guideline_id(text), text=text)
            seen.setdefault(g.id, g)
    return tuple(seen.values())


def guideline_change(before: str, after: str) -> GuidelineChange:
    """The guidelines `after` has that `before` lacks (in `after`'s order), and those it dropped."""
    old, new = split_guidelines(before), split_guidelines(after)
    old_ids, new_ids = {g.id for g in old}, {g.id for g in new}
    return GuidelineChange(added=tuple(g for g in new if g.id not in old_ids),
                           removed=tuple(g for g in old if g.id not in new_ids))


def without_guideline(prompt: str, gid: str) -> str:
    """The prompt with every line of guideline `gid` removed (the rest byte for byte); ValueError when absent."""
    lines = prompt.splitlines(keepends=True)
    kept = [line for line in lines if not ((text := normalize_line(line.rstrip("\r\n"))) and guideline_id(text) == gid)]
    if len(kept) == len(lines):
        raise ValueError(f"guideline {gid} is not in the prompt")
    return "".join(kept)
