"""The single output sink. With --json, one JSON document on stdout for scripts. For people: what a command was
asked to show (`show`, `diff`, `log`: the product) on stdout, so `show > build.txt` and `diff | less` work;
everything else (progress, logs, stage summaries, errors) on stderr. Off a terminal nothing is cut to 80 columns.

`handle_errors` is the one place that maps exceptions to exit codes (docs/reliability.md has the table):

| code | meaning | raised as |
|---|---|---|
| 0 | ok (also: nothing new, a skipped update) | — |
| 1 | unexpected error, a held lock, a systemic provider failure | any other exception, `SelfimproveError` |
| 2 | usage: a bad flag, config or input, a missing prerequisite | `UsageError`, `ConfigError` |
| 3 | not earned: the gate refused, no candidate to promote, a regression | `GateFailed` |
| 4 | integrity: an artifact or build does not match its digest | `IntegrityError` |
| 5 | production regressed online (`run`'s monitor) | `run`'s result, not an exception |
| 130 | interrupted (Ctrl-C); finished artifacts are kept | `KeyboardInterrupt` |

With --json, stdout holds exactly one document whatever happens: the command's result, or (when the command
failed before printing one) `{"schema": "selfimprove.error/1", "error", "hint", "exit_code"}`.
Nothing the user typed, no path and no message is ever read as Rich markup: the console has markup off, and the
styled prefixes are built as `Text`. Tracebacks only with SELFIMPROVE_DEBUG=1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

_consoles: dict[bool, Any] = {}
_printed = False  # a --json document was written by the current command
_json_requested = False  # the current command's --json flag, set by the option itself (`json_flag`)
UNBOUNDED_WIDTH = 10_000  # off a terminal: tables keep whole ids and lines, however long


def console(stdout: bool = False):
    """A Rich console on stderr (or stdout) with markup off; plain (no colour, no progress) and never wrapped at
    80 columns when its stream is not a terminal. The stream is looked up at each print (test runners swap it)."""
    if stdout not in _consoles:
        from rich.console import Console

        stream = sys.stdout if stdout else sys.stderr
        width = None if stream.isatty() else UNBOUNDED_WIDTH
        _consoles[stdout] = Console(stderr=not stdout, highlight=False, markup=False, width=width)
    return _consoles[stdout]


def emit(schema: str, data: dict[str, Any], *, json_mode: bool, render: Callable[[Any], None] | None = None,
         product: bool = False) -> None:
    """Print the result: `{"schema": ..., **data}` on stdout with --json, else `render(console)` — on stdout
    when the rendering is the product the user asked for (`product`), on stderr when it is a stage's summary."""
    global _printed
    if json_mode:
        from selfimprove.core.canonical import pretty_json

        sys.stdout.write(pretty_json({"schema": schema, **data}))
        sys.stdout.flush()
        _printed = True
    elif render is not None:
        render(console(stdout=product))


def say(label: str, text: str, style: str = "bold") -> None:
    """`label` styled, then `text` verbatim (never parsed as markup), on stderr."""
    from rich.text import Text

    console().print(Text.assemble((label, style), " ", text))


def progress_enabled() -> bool:
    """Live progress and log lines on stderr: only on a terminal, and not with SELFIMPROVE_NO_PROGRESS set."""
    return sys.stderr.isatty() and not os.environ.get("SELFIMPROVE_NO_PROGRESS")


def json_flag(value: bool) -> bool:
    """The --json option's callback: Click calls it for every invocation (with the default when the flag is
    absent), so the error handler knows the mode however the command names its parameter."""
    global _json_requested
    _json_requested = bool(value)
    return value


def log_line(text: str) -> None:
    """A stage's log line (an estimate, a warning) on stderr, verbatim."""
    console().print(text, markup=False, highlight=False)


def asker(default: bool = False) -> Callable[[str], bool] | None:
    """A yes/no question on the terminal, or None when nobody is there to answer (then stages refuse or skip)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None
    return lambda question: typer.confirm(question, default=default, err=True)


def evaluate_progress() -> Callable[[int, int, int], None] | None:
    """evaluate's per-batch line on a terminal: samples done, candidates still undecided."""
    if not progress_enabled():
        return None

    def show(done: int, total: int, undecided: int) -> None:
        sys.stderr.write(f"\r  {done}/{total} samples · {undecided} candidate(s) undecided")
        if done >= total or not undecided:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def usage_error_document(message: str, code: int) -> None:
    """The --json document of a usage error Click found before any command ran."""
    _error_document(message, "see the command's --help", code)


def _error_document(message: str, hint: str | None, code: int) -> None:
    global _printed
    if not _printed:
        sys.stdout.write(json.dumps({"schema": "selfimprove.error/1", "error": message, "hint": hint,
                                     "exit_code": code}, indent=2) + "\n")
        sys.stdout.flush()
        _printed = True


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body, turning exceptions into a message, a hint and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from selfimprove.core.errors import SelfimproveError

        global _printed, _json_requested
        _printed = False
        json_mode = _json_requested
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SelfimproveError as exc:
            if os.environ.get("SELFIMPROVE_DEBUG") == "1":
                console().print_exception()
            if json_mode:
                _error_document(exc.message, exc.hint, exc.exit_code)
            say("Error:", exc.message, "bold red")
            for reason in getattr(exc, "reasons", []):
                console().print(f"  - {reason}")
            if exc.hint:
                say("Hint:", exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if json_mode:
                _error_document("interrupted", "finished artifacts are kept; re-run to resume", 130)
            console().print("Interrupted; finished artifacts are kept.")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("SELFIMPROVE_DEBUG") == "1":
                raise
            text = f"{type(exc).__name__}: {exc}"
            if json_mode:
                _error_document(text, "re-run with SELFIMPROVE_DEBUG=1 for the traceback", 1)
            say("Unexpected error:", text, "bold red")
            say("Hint:", "re-run with SELFIMPROVE_DEBUG=1 for the traceback")
            raise typer.Exit(1) from None
        finally:
            _json_requested = False  # a later command without --json in this process starts clean

    return wrapper
