"""The terminal view of a pull."""

from __future__ import annotations

from typing import Any


def render_pull(console: Any, result: Any) -> None:
    """A `PullResult`: the source, the window, what was fetched and skipped, where it was written."""
    from rich.table import Table

    table = Table(title=f"pull · {result.target} · run {result.run}", show_header=False, box=None)
    src = result.source.get("project") or result.source.get("path") or ""
    table.add_row("source", f"{result.source.get('name')} {src}".strip())
    table.add_row("window", f"[{result.since or 'beginning'}, {result.until})  (from {result.since_from})")
    table.add_row("spans", f"{result.spans}  ({result.first_start_time} … {result.last_start_time})")
    names = ", ".join(f"{k} {v}" for k, v in sorted(result.annotation_names.items()))
    table.add_row("annotations", f"{result.annotations}" + (f"  ({names})" if names else ""))
    if result.skipped:
        table.add_row("skipped", ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())))
    table.add_row("written", f"{result.run_path}/raw/")
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
