"""Prompt templates as Phoenix prompts know them: `F_STRING` (`{var}`, Python `str.format`) and `MUSTACHE`
(`{{var}}`, `{{ var }}`; `\\{{` is left alone), the same parse and fill as phoenix-client's
`FStringBaseTemplateFormatter` and `MustacheBaseTemplateFormatter` (tests compare the two).

Rendering is strict: a template whose variables are not all given raises `TemplateError` naming them, so a
literal placeholder is never sent where production sent a value. Values are used as given (an f-string applies
its format spec to the value's own type, as the app's `str.format` did); mustache writes `str(value)`.

`locate(template, text)` tells whether a text is a rendering of a template (its literal parts in order, anything
where the placeholders are): that is how a span's template is matched to the message it produced, even when the
span's variables are missing. Pure: no I/O.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, Literal

TemplateFormat = Literal["F_STRING", "MUSTACHE"]
FORMATS: tuple[TemplateFormat, ...] = ("MUSTACHE", "F_STRING")  # the order a template's format is guessed in

_MUSTACHE = re.compile(r"(?<!\\){{\s*(\w+)\s*}}")


class TemplateError(ValueError):
    """A template that cannot be rendered: missing variables, or text that is not a valid template."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()):
        super().__init__(message)
        self.missing = missing


def _fstring_fields(template: str) -> list[tuple[str, str]]:
    """(literal text, field name) pairs; raises TemplateError for text `str.format` rejects (a lone brace)."""
    try:
        return [(literal, name or "") for literal, name, _spec, _conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise TemplateError(f"not a valid f-string template: {exc}") from exc


def variables_of(template: str, fmt: TemplateFormat) -> frozenset[str]:
    """The variable names a template needs in its format (TemplateError if it is not a valid template)."""
    if fmt == "MUSTACHE":
        return frozenset(_MUSTACHE.findall(template))
    return frozenset(name for _literal, name in _fstring_fields(template) if name)


def placeholder_formats(template: str) -> list[TemplateFormat]:
    """The formats in which `template` has at least one placeholder, most specific first."""
    out: list[TemplateFormat] = []
    for fmt in FORMATS:
        try:
            if variables_of(template, fmt):
                out.append(fmt)
        except TemplateError:
            continue
    return out


def render(template: str, fmt: TemplateFormat | None, variables: Mapping[str, Any] | None) -> str:
    """The template filled with `variables` (extra variables are ignored, as Phoenix does). `fmt` None: the text
    is not a template and comes back unchanged. Raises TemplateError when a variable is missing."""
    if fmt is None:
        return template
    needed = variables_of(template, fmt)
    given = variables or {}
    missing = tuple(sorted(needed - set(given)))
    if missing:
        raise TemplateError("missing template variable(s): " + ", ".join(missing), missing)
    if fmt == "MUSTACHE":
        return _MUSTACHE.sub(lambda m: str(given[m.group(1)]), template)
    try:
        return template.format(**given)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise TemplateError(f"the f-string template cannot be filled: {type(exc).__name__}: {exc}") from exc


def _literal_parts(template: str, fmt: TemplateFormat) -> list[str]:
    if fmt == "MUSTACHE":
        return _MUSTACHE.split(template)[::2]
    parts, current = [], ""
    for literal, name in _fstring_fields(template):
        current += literal
        if name:
            parts.append(current)
            current = ""
    return [*parts, current]


def locate(template: str, fmt: TemplateFormat, text: str) -> bool:
    """Whether `text` could be a rendering of `template`: its literal parts, in order, with anything between
    (leftmost matching, linear in the text: no regex backtracking on long prompts)."""
    try:
        parts = _literal_parts(template, fmt)
    except TemplateError:
        return False
    head, *middle, tail = parts if len(parts) > 1 else (parts[0], parts[0])
    if len(parts) == 1:
        return text == head
    end = len(text) - len(tail)
    if not text.startswith(head) or not text.endswith(tail) or end < len(head):
        return False
    pos = len(head)
    for part in middle:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def rendering_format(template: str, variables: Mapping[str, Any] | None, text: str) -> TemplateFormat | None:
    """The format in which `template` filled with `variables` gives exactly `text`, or None."""
    for fmt in placeholder_formats(template):
        try:
            if render(template, fmt, variables) == text:
                return fmt
        except TemplateError:
            continue
    return None


def guess_format(template: str) -> TemplateFormat | None:
    """The format a template is most likely written in (mustache when it has `{{var}}`), None without
    placeholders."""
    found = placeholder_formats(template)
    return found[0] if found else None
