"""Rich views of `experiment` (the hypothesis, its change, the verdict, the evidence, the Phoenix links) and
`experiments` (one row per recorded experiment)."""

from __future__ import annotations

from typing import Any


def _num(x: Any, spec: str = "+.3f") -> str:
    return "-" if x is None else format(x, spec)


def _ci(ci: Any) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def render_experiment(console: Any, rep: Any) -> None:
    hyp, res = rep.hypothesis, rep.result
    console.print(f"experiment {hyp.id} · {rep.target} · run {rep.run}" + (" (reused)" if rep.reused else ""))
    if hyp.description:
        console.print(f"hypothesis: {hyp.description}")
    console.print(f"control: {hyp.control.kind} {hyp.control.ref}{_sets(hyp.control)}  →  "
                  f"test: {hyp.test.kind} {hyp.test.ref}{_sets(hyp.test)}")
    change = hyp.change
    for g in change.guidelines.added:
        console.print(f"  + {g.text}  ({g.id})")
    for g in change.guidelines.removed:
        console.print(f"  - {g.text}  ({g.id})")
    for key, (a, b) in change.params.items():
        console.print(f"  {key}: {a!r} → {b!r}")
    if change.few_shot_changed:
        console.print("  few-shot demonstrations changed")
    verdict = "ACCEPTED" if res.outcome == "accepted" else "REFUSED"
    console.print(f"{verdict}: {res.metric} {_num(res.control_mean, '.3f')} → {_num(res.test_mean, '.3f')} "
                  f"(Δ {_num(res.diff)}, 95% CI {_ci(res.ci)}, p {_num(res.p_value, '.4f')}, n {res.n_samples}"
                  + (f", expected {res.expected_effect:+.3f}" if res.expected_effect is not None else "") + ")")
    for reason in res.reasons if res.outcome != "accepted" else ():
        console.print(f"  - {reason}")
    for w in [*res.warnings, *rep.warnings]:
        console.print(f"  warning: {w}")
    if rep.spent:
        console.print(f"spent now: {rep.spent.get('calls', 0)} calls, {rep.spent.get('cache_hits', 0)} cache hits, "
                      f"${rep.spent.get('cost_usd', 0.0):.4f}")
    if rep.phoenix:
        console.print(f"Phoenix dataset: {rep.phoenix['dataset']['url']}")
        for arm, exp in rep.phoenix["experiments"].items():
            console.print(f"Phoenix {arm}: {exp['url']}")
    if res.outcome == "accepted":
        console.print(f"promote it: selfimprove promote --run {rep.run} --candidate {hyp.id}")
    for a in rep.artifacts:
        console.print(f"  wrote {a}")


def _sets(arm: Any) -> str:
    return f" ({', '.join(arm.overrides)})" if arm.overrides else ""


def render_experiments(console: Any, entries: list[Any]) -> None:
    from rich.table import Table

    if not entries:
        console.print("no experiments recorded yet: `selfimprove experiment --test FILE` runs one")
        return
    table = Table()
    for col in ("id", "run", "hypothesis", "control → test", "metric", "Δ", "95% CI", "n", "outcome"):
        table.add_column(col)
    for e in entries:
        h, r = e.hypothesis, e.result
        table.add_row(h.id, e.run, h.description or "-", f"{h.control.ref}{_sets(h.control)} → "
                      f"{h.test.ref}{_sets(h.test)}", h.metric, _num(r.diff), _ci(r.ci), str(r.n_samples), r.outcome)
    console.print(table)
