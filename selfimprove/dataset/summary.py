"""The snapshot's readable report: `snapshot.md` in the run folder, and the same facts as a Rich view."""

from __future__ import annotations

from typing import Any


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _template(p: Any) -> str:
    if not p.template_format:
        return "-"
    versions = f" (version {', '.join(p.template_versions)})" if p.template_versions else ""
    return f"{p.template_format}: {', '.join(p.variables) or 'no variables'}{versions}"


def markdown(result: Any, policy: Any, checkpoint: Any) -> str:
    c = result.counts
    lines = [f"# Snapshot of `{result.target}`", ""]
    lines += [(f"- spans pulled: **{c.get('spans', 0)}**; bad: {c.get('bad', 0)}; filtered out: "
              f"{c.get('filtered', 0)}; duplicate inputs: {c.get('duplicates', 0)}; over --max-samples: "
              f"{c.get('dropped.max_samples', 0)}; no values for the template's variables: "
              f"{c.get('dropped.template_variables', 0)}"),
              (f"- samples: **{c.get('samples', 0)}** in {c.get('traces', 0)} traces -> train "
              f"**{c.get('train', 0)}**, test **{c.get('test', 0)}** (split by trace, stratified by "
              f"`{result.primary_eval or 'nothing'}`)"),
              (f"- annotations: {c.get('annotations', 0)} ({c.get('annotations.superseded', 0)} superseded by a "
              f"later one, {c.get('annotations.notes', 0)} notes skipped)"), ""]
    if result.filters:
        lines += ["Filters: " + ", ".join(f"`{f}`" for f in result.filters), ""]
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    kind = f" — a {policy.template_format} template rendered per sample with its variables" \
        if policy.template_format else ""
    lines += ["## Current policy", "", f"`{policy.digest}` — model `{policy.model}`{kind}"
              + "".join(f", {k} `{v}`" for k, v in policy.params().items() if k != "model"), "", "```text",
              policy.system_prompt or "(no system prompt)", "```", ""]
    lines += ["## Policies seen", "", "| digest | model | samples | first | last | current | template |",
              "|---|---|---|---|---|---|---|"]
    for p in result.policies:
        lines.append(f"| `{_short(p.digest)}` | {p.model} | {p.samples} | {p.first or '-'} | {p.last or '-'} | "
                     f"{'yes' if p.current else ''} | {_template(p)} |")
    lines += ["", "## Evals", "", "| eval | kind | spec from | judge | scored | missing | mean | labels |",
              "|---|---|---|---|---|---|---|---|"]
    for e in result.evals:
        labels = ", ".join(f"{k} {v}" for k, v in e.labels.items())
        star = " (primary)" if e.name == result.primary_eval else ""
        lines.append(f"| `{e.name}`{star} | {e.kind} | {e.spec_source} | {e.judge_model or '-'} | {e.scored} | "
                     f"{e.missing} | {_mean(e.mean_score)} | {labels} |")
    if result.joins or result.unjoined:
        lines += ["", "## How annotations reached the LLM spans", "",
                  "| eval | span | parent | root | ancestor | ambiguous |", "|---|---|---|---|---|---|"]
        for name, ways in result.joins.items():
            lines.append(f"| `{name}` | " + " | ".join(str(ways.get(w, 0)) for w in ("span", "parent", "root",
                                                                                  "ancestor"))
                         + f" | {result.ambiguous.get(name, 0)} |")
        if result.unjoined:
            lines += ["", "Annotations that reached no LLM span (counted, not used):", "",
                      "| reason | annotations | example |", "|---|---|---|"]
            for reason, n in result.unjoined.items():
                lines.append(f"| {reason} | {n} | {result.unjoined_examples.get(reason, '').replace('|', '/')} |")
    if result.agreement:
        lines += ["", "## Judges against people", "",
                  ("Where a human and the LLM judge labelled the same span. Humans cannot be replayed: their labels "
                   "are feedback for update; the gate uses the replayable judges."), "",
                  "| judge | human | n | agree | percent | kappa | flag |", "|---|---|---|---|---|---|---|"]
        for a in result.agreement:
            lines.append(f"| `{a.judge}` | `{a.human}` | {a.n} | {a.agree} | {_pct(a.percent)} | {_mean(a.kappa)} | "
                         f"{'disagrees' if a.flagged else ''} |")
    lines += ["", "## Bad spans (counted, not used)", ""]
    if result.bad:
        lines += ["| reason | spans | example |", "|---|---|---|"]
        for reason, n in sorted(result.bad.items()):
            lines.append(f"| {reason} | {n} | {result.bad_examples.get(reason, '').replace('|', '/')} |")
    else:
        lines.append("none")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def render_console(result: Any, console: Any) -> None:
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
