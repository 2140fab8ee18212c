"""Find system prompts that look like one unmarked template rendered with different values: many policies whose
prompts differ only in a few words. Snapshot warns about them (they split one policy into many, and promotion
would ship one rendering to everyone). Pure: no I/O.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

MAX_PROMPTS = 200  # the most used prompts are compared; beyond that the quadratic cost is not worth it
MIN_GROUP = 3  # "many": two similar prompts are as likely an edit as a template


@dataclass(frozen=True)
class SimilarPrompts:
    """Prompts (by index into the caller's list) that differ from the first only in `values`' words."""

    members: tuple[int, ...]
    values: tuple[str, ...]  # the words where they differ, first occurrence of each, in order


def _differing(a: list[str], b: list[str], max_words: int) -> list[str] | None:
    """b's words that differ from a, or None when more than `max_words` words differ (or the texts do not align)."""
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if max(i2 - i1, j2 - j1) > max_words:
            return None
        out += a[i1:i2] + b[j1:j2]
        if len(out) > 2 * max_words:
            return None
    return out


def similar_prompt_groups(prompts: list[str], max_words: int = 3, min_group: int = MIN_GROUP) -> list[SimilarPrompts]:
    """Groups of at least `min_group` distinct prompts (give them most used first) that differ from the group's
    first prompt in at most `max_words` words per difference."""
    groups: list[tuple[list[str], list[int], list[str]]] = []
    for index, text in enumerate(prompts[:MAX_PROMPTS]):
        words = text.split()
        for ref, members, values in groups:
            diff = _differing(ref, words, max_words)
            if diff:
                members.append(index)
                values += diff
                break
        else:
            groups.append((words, [index], []))
    return [SimilarPrompts(tuple(members), tuple(dict.fromkeys(values)))
            for _ref, members, values in groups if len(members) >= min_group]
