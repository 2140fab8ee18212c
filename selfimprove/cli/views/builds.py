"""Rich views of promote, diff, show and run results (drawn on the stderr console; never on stdout)."""

from __future__ import annotations

from typing import Any


def fmt_ci(ci: Any) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def fmt_num(x: Any, spec: str = "+.3f") -> str:
    return "-" if x is None else format(x, spec)


def gate_table(decision: Any):
    from rich.table import Table

    table = Table(title=f"Gate for {decision.candidate}: {'PASS' if decision.passed else 'REFUSED'}")
    for col in ("eval", "role", "gain", "95% CI", "n", "threshold", "verdict"):
        table.add_column(col)
    for c in decision.checks:
        threshold = f"≥ {c.threshold:+.3f}" if c.role == "primary" else f"> {c.threshold:+.3f}"
        table.add_row(c.eval, c.role, fmt_num(c.gain), fmt_ci(c.ci), str(c.n if c.n is not None else "-"),
                      threshold, c.verdict)
    return table


def render_promotion(console: Any, result: Any) -> None:
    if result.split is not None:
        held = " (held out)" if result.split == "test" else ""
        console.print(f"evidence: {result.candidate} on the '{result.split}' split{held}, {result.n_samples} samples",
                      markup=False, highlight=False)
    if result.decision is not None:
        console.print(gate_table(result.decision))
        for w in result.decision.warnings:
            console.print(f"  warning: {w}", markup=False)
    if result.action == "refused":
        pass  # the reasons follow as the exit-3 error
    elif result.action == "rollback":
        console.print(f"production: {result.previous or 'nothing'} → {result.build} (no build rewritten)")
    elif result.action == "dry-run":
        console.print(f"Dry run: the gate passes; production stays {result.production or 'unset'}. Nothing written.")
    elif result.action == "already promoted":
        console.print(f"Run {result.run} was already promoted as {result.build}; production is {result.production}.")
    else:
        written = ", ".join(result.builds_written) or "none (reused)"
        console.print(f"Promoted {result.candidate} as {result.build}: builds written {written}; "
                      f"production {result.previous or 'unset'} → {result.production}.")
    if result.phoenix:
        console.print(f"Phoenix prompt '{result.phoenix['prompt']}' version {result.phoenix['version_id']} "
                      f"tagged '{result.phoenix['tag']}'.")


def policy_lines(policy: dict[str, Any]) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted(policy.items()) if k not in ("system_prompt", "few_shot") and v is not None]


def render_show(console: Any, data: dict[str, Any]) -> None:
    from rich.panel import Panel
    from rich.table import Table

    b = data["build"]
    head = (f"{b['name']} of {b['target']}  {'(production)' if data['production'] else ''}\n"
            f"digest {b['digest']}\nparent {b.get('parent') or '-'}  run {b.get('run') or '-'}")
    console.print(Panel(head, title="build", expand=False))
    console.print(Panel(b["policy"]["system_prompt"], title="system prompt", expand=False))
    for line in policy_lines(b["policy"]):
        console.print(f"  {line}", markup=False)
    if b["policy"].get("few_shot"):
        console.print(f"  few-shot messages: {len(b['policy']['few_shot'])}")
    ev = b.get("evidence") or {}
    if ev.get("kind") == "baseline":
        console.print(f"Baseline build: {ev.get('note', '')} (run {ev.get('observed_in_run')}).", markup=False)
        return
    table = Table(title="evidence (candidate − parent, held-out)")
    for col in ("eval", "baseline", "candidate", "Δ", "95% CI", "n", "W/T/L"):
        table.add_column(col)
    for name, e in sorted((ev.get("evals") or {}).items()):
        table.add_row(name, fmt_num(e.get("baseline_mean"), ".3f"), fmt_num(e.get("candidate_mean"), ".3f"),
                      fmt_num(e.get("diff")), fmt_ci(e.get("ci")), str(e.get("n")),
                      f"{e.get('wins')}/{e.get('ties')}/{e.get('losses')}")
    console.print(table)
    cost = ev.get("cost") or {}
    if cost:
        console.print(f"cost per call ${cost.get('per_call_usd')} (baseline ${cost.get('baseline_per_call_usd')})")


def render_diff(console: Any, data: dict[str, Any]) -> None:
    from rich.syntax import Syntax
    from rich.table import Table

    a, b = data["a"], data["b"]
    console.print(f"diff {a['name']} → {b['name']} ({data['relation']})")
    if data["prompt_diff"]:
        console.print(Syntax(data["prompt_diff"], "diff", theme="ansi_dark", word_wrap=True))
    else:
        console.print("prompts: identical")
    if data["params"]:
        table = Table(title="parameters")
        for col in ("parameter", a["name"], b["name"]):
            table.add_column(col)
        for p in data["params"]:
            table.add_row(p["name"], str(p["a"]), str(p["b"]))
        console.print(table)
    table = Table(title=f"estimated change {a['name']} → {b['name']} (sum of measured gains along the chain)")
    for col in ("eval", "Δ", "≈95% CI", "tolerance", "verdict"):
        table.add_column(col)
    for name, e in sorted(data["evals"].items()):
        table.add_row(name, fmt_num(e["delta"]), fmt_ci(e.get("ci")), f"{e['tolerance']:.3f}", e["verdict"])
    console.print(table)
    for step in data["path"]:
        console.print(f"  {step['from']} → {step['to']}: {step['eval']} {fmt_num(step['diff'])} "
                      f"CI {fmt_ci(step['ci'])} (run {step['run']})", markup=False)
    console.print("B regresses A." if data["regresses"] else "No regression of B against A.")


def render_loop(console: Any, result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"selfimprove run · {result.target}" + (f" · run {result.run}" if result.run else ""))
    for col in ("step", "status", "detail", "s"):
        table.add_column(col)
    for s in result.steps:
        table.add_row(s.stage, s.status, s.detail, f"{s.seconds:.1f}")
    console.print(table)
    p = result.primary or {}
    effect = ""
    if p.get("diff") is not None:
        effect = (f" ({p.get('eval')} {fmt_num(p.get('baseline_mean'), '.3f')} → "
                  f"{fmt_num(p.get('candidate_mean'), '.3f')}, Δ {fmt_num(p.get('diff'))}, 95% CI {fmt_ci(p.get('ci'))})")
    headline = {
        "promoted": f"PROMOTED {result.build}{effect}; production {result.previous or 'unset'} → {result.production}",
        "refused": f"REFUSED by the gate{effect}; production stays {result.production or 'unset'} (exit 3)",
        "skipped": f"SKIPPED: {result.trigger.get('reason', '')}",
        "nothing new": "NOTHING NEW to learn from since the last run",
        "dry-run": f"DRY RUN: the gate passes{effect}; nothing written",
        "regressed": f"REGRESSED: {(result.monitor or {}).get('reason', '')}; production is "
                     f"{result.production or 'unset'} (exit 5)",
        "rollout promoted": f"ROLLOUT PROMOTED online: production is {result.production}",
        "rolled back": f"ROLLED BACK online: production stays {result.production} (exit 3)",
        "rollout continues": f"ROLLOUT CONTINUES: production is {result.production}; no update while it runs",
    }.get(result.outcome, result.outcome)
    console.print(headline, markup=False)
    spend = []
    if result.calls is not None:
        spend.append(f"{result.calls} LLM calls")
    if result.cost_usd:
        spend.append(f"${result.cost_usd:.4f}")
    spend.append(f"{result.seconds:.0f} s")
    console.print(" · ".join(spend))
    if result.report_html:
        console.print(f"report: {result.report_html}", markup=False)


def render_run_all(console: Any, result: Any) -> None:
    """One line per target of `run --all`: its outcome (or error, with the hint), its spend and time."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"selfimprove run · {len(result.targets)} targets")
    for col in ("target", "outcome", "detail", "calls", "s"):
        table.add_column(col)
    for t in result.targets:
        r = t.result
        if r is None:
            detail = (t.error or "") + (f" (hint: {t.hint})" if t.hint else "")
        else:
            detail = r.build if r.outcome == "promoted" else (r.refusal or {}).get("message") or \
                r.trigger.get("reason") or (r.steps[-1].detail if r.steps else "")
        calls = "" if r is None or r.calls is None else str(r.calls)
        outcome = f"ERROR (exit {t.exit_code})" if t.outcome == "error" else t.outcome
        table.add_row(Text(t.target), Text(outcome), Text(detail or ""), calls, f"{t.seconds:.1f}")
    console.print(table)
    failed = sum(t.outcome == "error" for t in result.targets)
    cap = f"; provider concurrency capped at {result.provider_concurrency}" if result.provider_concurrency else ""
    console.print(f"{len(result.targets) - failed} of {len(result.targets)} targets ran, {failed} failed; "
                  f"{result.parallel} at a time{cap}; {result.seconds:.0f} s; exit {result.exit_code}", markup=False)


def render_demo(console: Any, result: Any) -> None:
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table

    label = getattr(result, "label", "SIMULATOR")  # or "REAL MODEL <task model> at <host>"
    source = "simulated" if label == "SIMULATOR" else label
    console.print(Panel(result.notice, title=f"selfimprove demo · {label}", style="bold yellow", expand=False))
    t = result.traffic
    if t:
        scores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.get("scores", {}).items()))
        console.print(f"Production ({source}): {t.get('spans')} traced calls with the weak default prompt; "
                      f"judges' mean scores: {scores}", markup=False)
    p = result.primary or {}
    if p.get("diff") is not None:
        console.print(f"Held-out test ({source}): {p.get('eval')}  baseline {fmt_num(p.get('baseline_mean'), '.3f')}"
                      f" → candidate {fmt_num(p.get('candidate_mean'), '.3f')}   Δ {fmt_num(p.get('diff'))}  "
                      f"95% CI {fmt_ci(p.get('ci'))}  n={p.get('n')}", markup=False)
    outcome = {"promoted": f"PROMOTED {result.production}", "refused": "REFUSED by the gate (production unchanged)",
               "skipped": "SKIPPED by the trigger"}.get(result.outcome, result.outcome.upper())
    console.print(f"Outcome: {outcome}", markup=False)
    if result.loop.get("calls") is not None:
        via = " (replays and judges through the Batch API, at its price)" if getattr(result, "batch", False) else ""
        console.print(f"Spent by the loop: {result.loop['calls']} LLM calls, ${result.loop.get('cost_usd') or 0:.4f}"
                      f"{via}", markup=False)
    for reason in (result.loop.get("refusal") or {}).get("reasons", []):
        console.print(f"  - {reason}", markup=False)
    if result.prompt_diff:
        console.print(Panel(Syntax(result.prompt_diff, "diff", theme="ansi_dark", word_wrap=True),
                            title="prompt diff (baseline → promoted)", expand=False))
    if result.chain:
        table = Table(title="build chain")
        for col in ("build", "parent", "primary Δ", "95% CI", "production"):
            table.add_column(col)
        for b in result.chain:
            table.add_row(b["name"], b.get("parent") or "-", fmt_num(b.get("delta")), fmt_ci(b.get("ci")),
                          "◀" if b.get("production") else "")
        console.print(table)
    state = "running (Ctrl-C stops it)" if result.phoenix_running else "stopped; rerun with --keep-running to browse"
    console.print(f"Phoenix UI: {result.phoenix_url}  (project '{result.phoenix_project}', prompt 'demo' tagged "
                  f"production) — {state}", markup=False)
    if result.report_html:
        console.print(f"HTML report: {result.report_html}", markup=False)
    console.print(f"Workspace: {result.workspace}  ·  {result.seconds:.0f} s  ·  all numbers from the {label}",
                  markup=False)
