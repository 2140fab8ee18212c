"""The terminal view of a snapshot (the same facts as snapshot.md)."""

from __future__ import annotations

from typing import Any

from selfimprove.dataset.summary import _mean, _pct, _short, _template


def render_snapshot(console: Any, result: Any) -> None:
    """A `SnapshotResult`: counts, the policies seen, evals, joins, agreement, warnings, what was written."""
    from rich.table import Table

    c = result.counts
    head = Table(title=f"snapshot · {result.target} · run {result.run}" + (" (reused)" if result.reused else ""),
                 show_header=False, box=None)
    head.add_row("samples", f"{c.get('samples', 0)} (train {c.get('train', 0)}, test {c.get('test', 0)}) "
                            f"from {c.get('spans', 0)} spans")
    head.add_row("dropped", f"bad {c.get('bad', 0)}, filtered {c.get('filtered', 0)}, duplicates "
                            f"{c.get('duplicates', 0)}, over max {c.get('dropped.max_samples', 0)}, no template "
                            f"variables {c.get('dropped.template_variables', 0)}")
    head.add_row("policy", f"{_short(result.policy_digest)} ({result.policy_model}) of {len(result.policies)} seen")
    head.add_row("primary eval", result.primary_eval or "-")
    console.print(head)

    policies = Table("policy", "model", "samples", "first", "last", "current", "template", title="policies seen")
    for p in result.policies:
        policies.add_row(p.digest if not console.is_terminal else _short(p.digest), p.model, str(p.samples),
                         p.first or "-", p.last or "-", "yes" if p.current else "", _template(p))
    console.print(policies)
    if result.evals:
        table = Table("eval", "kind", "spec", "judge", "scored", "missing", "mean")
        for e in result.evals:
            table.add_row(e.name, e.kind, e.spec_source, e.judge_model or "-", str(e.scored), str(e.missing),
                          _mean(e.mean_score))
        console.print(table)
    if result.joins or result.unjoined:
        ways = ", ".join(f"{name}: " + " ".join(f"{w} {n}" for w, n in counts.items())
                         for name, counts in result.joins.items())
        lost = ", ".join(f"{k} {v}" for k, v in result.unjoined.items())
        console.print(f"annotations joined: {ways or 'none'}" + (f"; reached no LLM span: {lost}" if lost else ""),
                      markup=False, highlight=False)
    if result.agreement:
        table = Table("judge", "human", "n", "agree", "kappa", "flag", title="judges against people")
        for a in result.agreement:
            table.add_row(a.judge, a.human, str(a.n), _pct(a.percent), _mean(a.kappa),
                          "disagrees" if a.flagged else "")
        console.print(table)
    if result.bad:
        console.print("bad spans: " + ", ".join(f"{k} {v}" for k, v in sorted(result.bad.items())), markup=False)
    from rich.text import Text

    for w in result.warnings:
        console.print(Text.assemble(("warning:", "bold yellow"), " ", w), highlight=False)
    for n in result.notes:
        console.print(f"note: {n}", markup=False)
    if result.run_path:
        console.print(f"written: {result.run_path}/dataset.parquet, checkpoint.json, snapshot.md", markup=False)
