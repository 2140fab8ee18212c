"""Unified diffs between a candidate and its parent: the prompt line by line, the few-shot demonstrations, and
every parameter that changed (model, temperature, response_format, tools, ...)."""

from __future__ import annotations

import difflib
import json

from selfimprove.core.records import Policy

PARAMS = ("model", "temperature", "top_p", "max_tokens", "response_format", "tools")


def policy_document(policy: Policy) -> list[str]:
    """A policy as diffable lines: the system prompt, then the demonstrations, then the parameters."""
    lines = policy.system_prompt.splitlines() or [""]
    for m in policy.few_shot:
        lines += [f"[few-shot {m.role}] {line}" for line in (m.text() or "").splitlines() or [""]]
    dumped = policy.model_dump(mode="json")
    lines += [f"# {k}: {json.dumps(dumped.get(k), sort_keys=True)}" for k in PARAMS]
    return lines


def policy_diff(parent: Policy, child: Policy, parent_name: str, child_name: str) -> str:
    """The unified diff of the two policies' documents (empty when they are equal)."""
    diff = difflib.unified_diff(policy_document(parent), policy_document(child), fromfile=f"{parent_name}/policy",
                                tofile=f"{child_name}/policy", lineterm="")
    return "\n".join(diff) + "\n"


def change_ratio(parent: Policy, child: Policy) -> float:
    """How much of the prompt changed, 0 (same) to 1 (nothing in common), by difflib's ratio."""
    return round(1.0 - difflib.SequenceMatcher(None, parent.system_prompt, child.system_prompt).ratio(), 4)
