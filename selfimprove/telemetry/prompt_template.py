"""Which prompt a call's policy holds: its literal system prompt, or the OpenInference prompt template
(`llm.prompt_template.template|variables|version`, set by `using_prompt_template` or `selfimprove.tag_policy`)
that rendered it.

A template is the policy's prompt only when it provably produced the call's system prompt: filled with the span's
own variables, in one of the Phoenix template formats (MUSTACHE `{{var}}`, F_STRING `{var}`), it gives exactly the
system prompt the call sent. Then the sample keeps its variables and replay renders the template the same way.
Otherwise:
- the template has the system prompt's shape (its literal parts, in order) but cannot reproduce it: the span is
  bad, `template_variables_missing` when variables it needs are absent, else `template_mismatch` (replaying it
  would send something production never sent);
- the template has no placeholders, or matches another message (a templated user turn), or no message at all (a
  template set in context for a different call): the literal system prompt is the policy, and the span says so
  (`note`), so snapshot can count it.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfimprove.core.records import Message
from selfimprove.core.templates import (
    TemplateFormat,
    locate,
    placeholder_formats,
    rendering_format,
    variables_of,
)


@dataclass(frozen=True)
class SystemPrompt:
    """The policy's system prompt for one call, and the variables that call filled it with."""

    text: str
    template_format: TemplateFormat | None = None
    variables: dict[str, Any] | None = None
    version: str | None = None
    note: str | None = None  # "template.elsewhere" | "template.unmatched" when a template was not the system's


class TemplateMismatch(ValueError):
    """A template shaped like the system prompt that cannot reproduce it (`reason` is a bad-span reason)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def system_prompt_of(history: list[Message]) -> str:
    """The leading system/developer messages' text, joined by blank lines ('' when the call has none)."""
    parts = []
    for message in history:
        if message.role not in ("system", "developer"):
            break
        parts.append(message.text())
    return "\n\n".join(parts)


def system_prompt(history: list[Message], template: dict[str, Any] | None) -> SystemPrompt:
    """The call's system prompt as a policy holds it (see the module doc). Raises TemplateMismatch."""
    system = system_prompt_of(history)
    text = template.get("template") if template else None
    if not isinstance(text, str):
        return SystemPrompt(system)
    version = None if template.get("version") is None else str(template["version"])
    variables = template.get("variables")
    formats = placeholder_formats(text)
    if not formats or text == system:  # nothing to fill, or the app sent the template as it is
        return SystemPrompt(system, version=version)
    fmt = rendering_format(text, variables, system)
    if fmt is not None:
        return SystemPrompt(text, fmt, dict(variables or {}), version)
    shaped = [f for f in formats if system and locate(text, f, system)]
    if shaped:
        missing = sorted(variables_of(text, shaped[0]) - set(variables or {}))
        if missing:
            recorded = ", ".join(sorted(variables or {})) or "none"
            raise TemplateMismatch("template_variables_missing",
                                   f"the template needs {', '.join(missing)}; the span recorded: {recorded}")
        raise TemplateMismatch("template_mismatch", "the template filled with the span's variables is not the "
                                                    "system prompt the call sent")
    others = [m.text() for m in history if m.role not in ("system", "developer")]
    elsewhere = any(locate(text, f, other) for other in others for f in formats)
    return SystemPrompt(system, version=version, note="template.elsewhere" if elsewhere else "template.unmatched")
