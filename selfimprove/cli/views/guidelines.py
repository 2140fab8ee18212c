"""Rich views of `guidelines`: the ablation's estimate (printed before anything is spent) and the table."""

from __future__ import annotations

from typing import Any


def render_estimate(console: Any, est: dict[str, Any]) -> None:
    budget = est["budget"]
    usd = f", ${budget['max_usd']}" if budget.get("max_usd") is not None else ""
    console.print(f"ablation of {est['guidelines']} guideline(s) of {est['build']} on {est['samples']} held-out "
                  f"samples: at most {est['calls']} LLM calls, ~{est['tokens']} tokens, ~${est['cost_usd']:.4f} "
                  f"(budget {budget['max_calls']} calls{usd}; the build's replays are shared through the cache, "
                  "the sequential test may stop earlier)")


def render_guidelines(console: Any, rep: Any) -> None:
    from rich.table import Table

    if not rep.guidelines:
        console.print(f"target '{rep.target}' has no builds yet: its guidelines appear with its first promotion")
        return
    table = Table(title=f"guidelines of {rep.target} (production: {rep.production or 'unset'})")
    for col in ("id", "guideline", "first", "builds", "impact (Δ, 95% CI)", "verdict"):
        table.add_column(col)
    for g in rep.guidelines:
        imp = g.impact
        measured = (f"{imp.diff:+.3f} [{imp.ci[0]:+.3f}, {imp.ci[1]:+.3f}]" if imp and imp.diff is not None and imp.ci
                    else "-")
        verdict = "-" if imp is None else ("did the work" if imp.outcome == "accepted" else "no measurable effect")
        builds = ", ".join(g.builds) if len(g.builds) <= 3 else f"{g.builds[0]} … {g.builds[-1]} ({len(g.builds)})"
        table.add_row(g.id, g.text, g.first_build or "-", builds, measured, verdict)
    console.print(table)
    ab = rep.ablation
    if ab is not None:
        console.print(f"ablation of {ab.build} (against {ab.parent or 'nothing'}): {len(ab.measured)} line(s) "
                      f"measured at alpha {ab.alpha_per_line:.4f} each, spent {ab.spent.get('calls', 0)} calls, "
                      f"${ab.spent.get('cost_usd', 0.0):.4f}")
        if ab.not_measured:
            console.print(f"  not measured (budget used up): {', '.join(ab.not_measured)}")
        for w in ab.warnings:
            console.print(f"  warning: {w}")
