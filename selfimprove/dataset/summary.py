"""The snapshot's readable report: `snapshot.md` in the run folder (its terminal view is
selfimprove.cli.views.snapshot)."""

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

