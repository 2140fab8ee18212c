"""Rendering a stage result: JSON for scripts, a Rich summary for people."""

from __future__ import annotations

from typing import Any

from selfimprove.cli.output import emit


def as_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(result)
    return dict(result)


def render_result(schema: str, result: Any, json_mode: bool) -> None:
    """Print `result` (a pydantic model, dataclass or dict); a result with `render(console)` draws itself."""
    data = as_dict(result)

    def draw(console) -> None:
        if hasattr(result, "render"):
            result.render(console)
            return
        from rich.table import Table

        table = Table(show_header=False, box=None)
        for key, value in data.items():
            table.add_row(key, str(value))
        console.print(table)

    emit(schema, data, json_mode=json_mode, render=draw)
