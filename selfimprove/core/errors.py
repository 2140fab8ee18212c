"""Errors that carry their exit code. One place maps exceptions to codes (cli/output.py reads `exit_code`).

0 ok · 1 unexpected error · 2 usage · 3 gate not passed · 4 integrity failure · 5 production regressed online
(`run`'s monitor: an outcome, not an exception; cli/loop_cmd.py).
"""

from __future__ import annotations

from typing import Any


class SelfimproveError(Exception):
    """An expected failure: a message for the user, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(SelfimproveError):
    """Bad input from the user: a flag, a config file, a missing artifact."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file that does not validate: names the file, the key, the expectation and what was found."""


class NothingNew(UsageError):
    """An incremental pull found no spans after the cursor: for cron, "nothing to do", not a failure."""


class GateFailed(SelfimproveError):
    """A candidate did not earn promotion, or a diff shows a regression."""

    exit_code = 3

    def __init__(self, message: str, reasons: list[str] | None = None, hint: str | None = None,
                 result: Any = None):
        super().__init__(message, hint)
        self.reasons = list(reasons or [])
        self.result = result  # what the refusing stage decided (promote: a PromoteResult with action "refused")


class IntegrityError(SelfimproveError):
    """An artifact does not match its recorded digest, or the manifest chain is broken."""

    exit_code = 4

    def __init__(self, message: str, path: str | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.path = path


class LockHeld(SelfimproveError):
    """Another run of the same target holds its lock."""

    exit_code = 1
