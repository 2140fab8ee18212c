"""The one diff of two policies: the prompt line by line, the few-shot demonstrations, and every parameter that
changed (model, temperature, response_format, tools, ...). `update` writes a candidate's diff to its parent,
`diff` compares two builds' prompts, report.html shows the baseline → best candidate diff."""

from __future__ import annotations

import difflib
import json

from selfimprove.core.records import Policy

PARAMS = ("model", "temperature", "top_p", "max_tokens", "response_format", "tools")


def prompt_document(policy: Policy) -> list[str]:
    """A policy's prompt as diffable lines: the system prompt, then the demonstrations."""
    lines = policy.system_prompt.splitlines() or [""]
    for m in policy.few_shot:
        lines += [f"[few-shot {m.role}] {line}" for line in (m.text() or "").splitlines() or [""]]
    return lines


def policy_document(policy: Policy) -> list[str]:
    """A policy as diffable lines: the prompt document, then the parameters."""
    dumped = policy.model_dump(mode="json")
    return prompt_document(policy) + [f"# {k}: {json.dumps(dumped.get(k), sort_keys=True)}" for k in PARAMS]


def prompt_diff(a: Policy, b: Policy, a_name: str, b_name: str) -> str:
    """The unified diff of the two prompts' documents ("" when they are equal)."""
    return "\n".join(difflib.unified_diff(prompt_document(a), prompt_document(b), fromfile=f"{a_name}/prompt",
                                          tofile=f"{b_name}/prompt", lineterm=""))


def policy_diff(parent: Policy, child: Policy, parent_name: str, child_name: str) -> str:
    """The unified diff of the two policies' documents, parameters included (one newline when they are equal)."""
    diff = difflib.unified_diff(policy_document(parent), policy_document(child), fromfile=f"{parent_name}/policy",
                                tofile=f"{child_name}/policy", lineterm="")
    return "\n".join(diff) + "\n"


def param_changes(a: Policy, b: Policy) -> list[dict]:
    """[{name, a, b}] for every replayed parameter that differs."""
    pa, pb = a.model_dump(mode="json"), b.model_dump(mode="json")
    return [{"name": k, "a": pa.get(k), "b": pb.get(k)} for k in PARAMS if pa.get(k) != pb.get(k)]


def change_ratio(parent: Policy, child: Policy) -> float:
    """How much of the prompt changed, 0 (same) to 1 (nothing in common), by difflib's ratio."""
    return round(1.0 - difflib.SequenceMatcher(None, parent.system_prompt, child.system_prompt).ratio(), 4)
