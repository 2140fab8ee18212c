"""Telling an environment variable's NAME from a secret pasted in its place, and describing a secret without
showing it. Errors about a pasted key show at most `redact(value)`: a 4-character prefix and the length."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "phx_", "ak-", "xai-", "gsk_", "hf_", "AIza")


def is_env_var_name(value: str) -> bool:
    """True for something shaped like an environment variable's name; false for a key pasted in its place
    (a known key prefix, characters a name cannot hold, or a long mixed-case run with digits)."""
    if not value or not _NAME.fullmatch(value) or value.startswith(_KEY_PREFIXES):
        return False
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return not (len(value) >= 24 and mixed)


def redact(value: str) -> str:
    """A secret, described: its first 4 characters and its length (`'sk-p…' (51 characters)`)."""
    return f"'{value[:4]}…' ({len(value)} characters)"
