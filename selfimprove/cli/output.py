"""The single output sink. With --json, one JSON document on stdout for scripts. For people: what a command was
asked to show (`show`, `diff`, `log`: the product) on stdout, so `show > build.txt` and `diff | less` work;
everything else (progress, logs, stage summaries, errors) on stderr. Off a terminal nothing is cut to 80 columns.

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

_consoles: dict[bool, Any] = {}
UNBOUNDED_WIDTH = 10_000  # off a terminal: tables keep whole ids and lines, however long


def console(stdout: bool = False):
    """A Rich console on stderr (or stdout); plain (no colour, no progress) and never wrapped at 80 columns
    when its stream is not a terminal. The stream is looked up at each print (test runners swap it)."""
    if stdout not in _consoles:
        from rich.console import Console

        stream = sys.stdout if stdout else sys.stderr
        width = None if stream.isatty() else UNBOUNDED_WIDTH
        _consoles[stdout] = Console(stderr=not stdout, highlight=False, width=width)
    return _consoles[stdout]


def emit(schema: str, data: dict[str, Any], *, json_mode: bool, render: Callable[[Any], None] | None = None,
         product: bool = False) -> None:
    """Print the result: `{"schema": ..., **data}` on stdout with --json, else `render(console)` — on stdout
    when the rendering is the product the user asked for (`product`), on stderr when it is a stage's summary."""
    if json_mode:
        from selfimprove.core.canonical import pretty_json

        sys.stdout.write(pretty_json({"schema": schema, **data}))
        sys.stdout.flush()
    elif render is not None:
        render(console(stdout=product))


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
