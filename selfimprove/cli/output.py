"""The single output sink: Rich on stderr for people, one JSON document on stdout for scripts.

`handle_errors` is the one place that maps exceptions to exit codes: SelfimproveError subclasses carry
theirs (2 usage, 3 gate, 4 integrity), anything unexpected exits 1. Tracebacks only with SELFIMPROVE_DEBUG=1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

_console = None


def console():
    """A Rich console on stderr; plain (no colour, no progress) when stderr is not a terminal."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False)
    return _console


def emit(schema: str, data: dict[str, Any], *, json_mode: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print the result: `{"schema": ..., **data}` on stdout with --json, else `render(console)` on stderr."""
    if json_mode:
        from selfimprove.core.canonical import pretty_json

        sys.stdout.write(pretty_json({"schema": schema, **data}))
        sys.stdout.flush()
    elif render is not None:
        render(console())


def progress_enabled() -> bool:
    """Live progress and log lines on stderr: only on a terminal, and not with SELFIMPROVE_NO_PROGRESS set."""
    return sys.stderr.isatty() and not os.environ.get("SELFIMPROVE_NO_PROGRESS")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body, turning exceptions into a message, a hint and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from selfimprove.core.errors import GateFailed, SelfimproveError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SelfimproveError as exc:
            if os.environ.get("SELFIMPROVE_DEBUG") == "1":
                console().print_exception()
            json_mode = bool(kwargs.get("json_output"))
            if json_mode and not isinstance(exc, GateFailed):
                sys.stdout.write(json.dumps({"schema": "selfimprove.error/1", "error": exc.message,
                                             "hint": exc.hint, "exit_code": exc.exit_code}, indent=2) + "\n")
            console().print(f"[bold red]Error:[/] {exc.message}", markup=True)
            for reason in getattr(exc, "reasons", []):
                console().print(f"  - {reason}", markup=False)
            if exc.hint:
                console().print(f"[bold]Hint:[/] {exc.hint}", markup=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console().print("Interrupted; finished artifacts are kept.")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("SELFIMPROVE_DEBUG") == "1":
                raise
            console().print(f"[bold red]Unexpected error:[/] {type(exc).__name__}: {exc}", markup=True)
            console().print("[bold]Hint:[/] re-run with SELFIMPROVE_DEBUG=1 for the traceback", markup=True)
            raise typer.Exit(1) from None

    return wrapper
