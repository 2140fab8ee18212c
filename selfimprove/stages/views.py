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
    console.print(Panel(head, title="build"))
    console.print(Panel(b["policy"]["system_prompt"], title="system prompt"))
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
    for col in ("eval", "Δ", "tolerance", "verdict"):
        table.add_column(col)
    for name, e in sorted(data["evals"].items()):
        table.add_row(name, fmt_num(e["delta"]), f"{e['tolerance']:.3f}", e["verdict"])
    console.print(table)
    for step in data["path"]:
        console.print(f"  {step['from']} → {step['to']}: {step['eval']} {fmt_num(step['diff'])} "
                      f"CI {fmt_ci(step['ci'])} (run {step['run']})", markup=False)
    console.print("B regresses A." if data["regresses"] else "No regression of B against A.")
