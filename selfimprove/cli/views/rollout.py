"""The Rich rendering of a rollout result (start, status, stop)."""

from __future__ import annotations

from typing import Any


def render_rollout(console: Any, result: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    def num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    head = (f"rollout {result.rollout} of {result.target}: {result.status} (revision {result.revision}, "
            f"{result.mode}{', keyed by ' + result.key_field if result.key_field else ''}); "
            f"production is {result.production or 'unset'}")
    console.print(Text(head))
    if result.pulled:
        console.print(Text(f"pull: {result.pulled}"))
    table = Table(title=f"online {result.primary or 'primary'} score" if result.primary else None)
    for col in ("arm", "build", "share", "judged calls", "keys", "mean", "95% CI"):
        table.add_column(col)
    for a in result.arms:
        ci = f"[{a.ci[0]:.3f}, {a.ci[1]:.3f}]" if a.ci else "-"
        table.add_row(a.arm, a.build, f"{a.share:.1%}", str(a.n), str(a.clusters), num(a.mean), ci)
    console.print(table)
    d = result.decision
    if d:
        diff = "-" if d.get("diff") is None else f"{d['diff']:+.3f}"
        ci = f" [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d.get("ci") else ""
        console.print(Text(f"challenger - champion: {diff}{ci}; decision: {d['action']}"))
        for r in d.get("reasons") or []:
            console.print(Text(f"  {r}"))
    if result.untagged:
        console.print(Text(f"{result.untagged} judged calls name no arm of this rollout (not served through "
                           "load_policy with this rollout, or from before it)"))
    if result.action in ("promoted", "rolled back", "stopped", "started"):
        console.print(Text(f"{result.action}: production is {result.production or 'unset'}"))
    if result.phoenix:
        console.print(Text(f"Phoenix prompt '{result.phoenix['prompt']}' version {result.phoenix['version_id']} "
                           f"tagged '{result.phoenix['tag']}'."))
