"""Rendering a stage result: JSON for scripts, a Rich summary for people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfimprove.cli.output import emit


def as_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(result)
    return dict(result)


def render_result(schema: str, result: Any, json_mode: bool,
                  view: Callable[[Any, Any], None] | None = None) -> None:
    """Print `result` (a pydantic model, dataclass or dict): its document with --json, else `view(console,
    result)` (a function of selfimprove.cli.views), or a plain key/value table when there is no view."""
    data = as_dict(result)

    def draw(console) -> None:
        if view is not None:
            view(console, result)
            return
        from rich.table import Table

        table = Table(show_header=False, box=None)
        for key, value in data.items():
            table.add_row(key, str(value))
        console.print(table)

    emit(schema, data, json_mode=json_mode, render=draw)
