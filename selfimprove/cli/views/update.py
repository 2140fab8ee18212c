"""The Rich view of an update: the candidates (role, guards, validation score, size), their diffs against their
parents, and the failure taxonomy with counts."""

from __future__ import annotations

from typing import Any


def render_update(console: Any, result: Any) -> None:
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    title = f"update · {result.target} · run {result.run} · {result.optimizer}" + (" (reused)" if result.reused else "")
    table = Table(title=title)
    for col in ("candidate", "parent", "role", "round", "guards", "val", "chars", "change", "edits", "calls"):
        table.add_column(col, justify="right" if col in ("round", "val", "chars", "change", "edits", "calls")
                         else "left")
    if result.seed_val_mean is not None:
        table.add_row(result.seed, "", "seed", "0", "", f"{result.seed_val_mean:.3f}", "", "", "", "")
    for c in result.candidates:
        mark = " ★" if c.id == result.best else ""
        table.add_row(c.id + mark, c.parent or "", c.role, str(c.round), "ok" if c.passed_guards else "rejected",
                      "" if c.val_mean is None else f"{c.val_mean:.3f}", str(c.chars), f"{c.change:.0%}",
                      str(len(c.edits)), str(c.calls))
    console.print(table)
    for c in result.candidates:
        console.print(Text.assemble("\n", (c.id, "bold"), f" ({c.role}, parent {c.parent})"))
        for reason in c.rejected_by:
            console.print(f"  rejected by {reason}", markup=False)
        for e in c.edits:
            console.print(f"  - [{e['kind']}] {e['instruction']}  (addresses: {e['addresses'] or 'unstated'})",
                          markup=False)
        if c.diff.strip():
            console.print(Syntax(c.diff, "diff", word_wrap=True, background_color="default"))
    if result.taxonomy:
        tax = Table(title="failure modes (current policy, train; `update --focus CLUSTER` targets one)")
        for col in ("cluster", "eval", "count", "terms", "example"):
            tax.add_column(col)
        for t in result.taxonomy[:10]:
            tax.add_row(t["id"], t["eval"], str(t["count"]), ", ".join(t["terms"]), t["example"][:120])
        console.print(tax)
    best = f"{result.best} ({result.best_val_mean:.3f} vs seed {result.seed_val_mean:.3f} on {result.val_samples} " \
           f"validation samples)" if result.best and result.best_val_mean is not None else "none better than the seed"
    console.print(f"\nbest: {best}; {result.calls}/{result.max_calls} calls, {result.tokens} tokens, "
                  f"${result.cost_usd:.4f}; next: `selfimprove evaluate`", markup=False)
    if result.trade_off:
        console.print(f"trade-off: {result.trade_off}", markup=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", markup=False, style="yellow")
