"""The terminal view of an evaluation: per candidate, eval | baseline | candidate | Δ | 95% CI | n | verdict; the
decision test; agreement with people; cost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfimprove.core.report import Report


def render_evaluate(console: Any, result: Any) -> None:
    """An `EvalReport`: which run, the report, what this run spent and wrote."""
    console.print(f"evaluate {result.target} · run {result.run}" + (" (reused)" if result.reused else ""),
                  highlight=False)
    render_report(console, result.report, result.warnings)
    if result.spent:
        console.print(f"spent now: {result.spent.get('calls', 0)} calls, {result.spent.get('cache_hits', 0)} "
                      f"cache hits, ${result.spent.get('cost_usd', 0.0):.4f}", highlight=False)
    for a in result.artifacts:
        console.print(f"  wrote {a}", highlight=False)


def render_report(console: Any, report: Report, notes: Sequence[str] = ()) -> None:
    """The terminal view: per candidate, eval | baseline | candidate | Δ | 95% CI | n | verdict; then cost."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def f(x: Any, fmt: str = "{:.3f}") -> str:
        return "–" if x is None else fmt.format(x)

    for note in notes:
        console.print(Text.assemble(("!", "yellow"), " ", note), highlight=False)
    console.print(f"evidence: split '{report.split}'" + (" (held out)" if report.held_out else
                  " (NOT held out: it cannot promote)") + f", {report.n_samples} samples", highlight=False, markup=False)
    for c in report.candidates:
        title = c.id + ("" if c.passed_guards else " (failed guards)") + \
                (" ★ best" if report.best == c.id else "") + (" · Pareto" if c.pareto else "")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
        for col in ("eval", "base", "cand", "Δ", "95% CI", "n", "clusters", "p", "verdict"):
            table.add_column(col, justify="left" if col in ("eval", "verdict") else "right",
                             no_wrap=col not in ("eval", "verdict"), overflow="fold")
        for name, e in sorted(c.evals.items(), key=lambda kv: (kv[0] != report.primary_eval, kv[0])):
            ci = e.ci or (None, None)
            is_primary = name == report.primary_eval
            p = e.test.p_value if is_primary and e.test else (None if is_primary else e.p_regression)
            table.add_row(name + ("*" if is_primary else ""), f(e.baseline_mean, "{:.2f}"),
                          f(e.candidate_mean, "{:.2f}"), f(e.diff, "{:+.3f}"),
                          f"{f(ci[0], '{:+.2f}')}..{f(ci[1], '{:+.2f}')}", str(e.n), str(e.clusters),
                          f(p, "{:.3g}") + ("" if is_primary else "↓"), report.verdicts.get(c.id, {}).get(name, ""))
        console.print(table)
        dec = c.decision
        if dec is not None and dec.reason:
            adj = f" · Holm-adjusted p {dec.p_adjusted:.4g} vs level {dec.level:.4g}" \
                if dec.p_adjusted is not None and dec.level is not None else ""
            est = f" · effect corrected for early stopping {dec.estimate_corrected:+.3f}" \
                if dec.estimate_corrected is not None else ""
            console.print(f"  test: {dec.reason}{adj}{est}", highlight=False, markup=False)
        for name, a in sorted(c.label_agreement.items()):
            counts = " · ".join(f"{k} {a.baseline.get(k, 0)}→{a.candidate.get(k, 0)}" for k in a.baseline)
            console.print(f"  {name} (labels only, no score): same label on {a.agree}/{a.n} samples; "
                          f"{counts}", highlight=False, markup=False)
        cost, err = c.cost, c.errors
        console.print(f"  tokens/call {f(cost.tokens_per_call, '{:.0f}')} · cost/call "
                      f"${f(cost.per_call_usd, '{:.6f}')} (baseline ${f(cost.baseline_per_call_usd, '{:.6f}')})"
                      f" · latency p50 {f(cost.latency_ms_p50, '{:.0f}')} ms · failed: "
                      f"{err.generation} generation, {err.judgement} judgement", highlight=False)
    for a in report.human_agreement:
        kappa = "undefined" if a.kappa is None else f"{a.kappa:.2f}"
        console.print(f"judge {a.judge} vs people ({a.human}): {a.agree}/{a.n} agree, kappa {kappa}"
                      + (" — DISAGREES with people" if a.flagged else ""), highlight=False, markup=False)
    if report.stored_only:
        console.print("not replayed (people cannot be; the gate uses the replayable evals): "
                      + ", ".join(s.name for s in report.stored_only), highlight=False, markup=False)
    plan = report.decision
    how = f"decided by {plan.test}; {plan.correction}; " if plan else ""
    console.print(f"* primary eval, {how}p↓: cluster-robust p of a drop · scores normalised to [0, 1], 1 best\n"
                  f"best: {report.best or 'none'} · {report.calls} LLM calls · ${report.cost_usd:.4f} at list prices",
                  highlight=False)
