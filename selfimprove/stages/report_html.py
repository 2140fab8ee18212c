"""`report.html`: a self-contained page (inline SVG, no scripts, no external resources) drawn from a report document
(selfimprove.core.report.Report).

Two plots per eval: each candidate's mean score with the 95% CI of its difference from the baseline (the CI is
shifted onto the baseline's mean, so the dashed baseline line crossing a bar means "not significant"), and score
against cost per call with the Pareto front. Pure string building: no I/O, no plotting library.
"""

from __future__ import annotations

from html import escape
from typing import Any

from selfimprove.core.report import Report

W, H = 640, 40  # plot width, height per row
PAD_L, PAD_R, PAD_T = 170, 30, 30


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def ci_plot(eval_name: str, rows: list[dict[str, Any]], baseline_mean: float | None) -> str:
    """Horizontal interval plot: one row per candidate (mean and shifted CI), a dashed line at the baseline."""
    pts = [r for r in rows if r.get("candidate_mean") is not None]
    if not pts or baseline_mean is None:
        return f"<p>No complete pairs for <b>{escape(eval_name)}</b>.</p>"
    values = [baseline_mean]
    for r in pts:
        values += [r["candidate_mean"]] + [baseline_mean + c for c in (r.get("ci") or []) if c is not None]
    lo, hi = min(values), max(values)
    margin = max(0.02, (hi - lo) * 0.1)
    lo, hi = max(lo - margin, min(0.0, lo)), hi + margin
    height = PAD_T + H * len(pts) + 30
    x = _scale(lo, hi, PAD_L, W - PAD_R)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" '
           f'aria-label="{escape(eval_name)}: score with 95% CI">'),
           f'<text x="{PAD_L}" y="18" class="t">{escape(eval_name)}: candidate mean, 95% CI of Δ vs baseline</text>']
    for tick in _ticks(lo, hi):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{PAD_T}" x2="{tx:.1f}" y2="{height - 25}" class="grid"/>'
                   f'<text x="{tx:.1f}" y="{height - 10}" class="tick">{tick:g}</text>')
    bx = x(baseline_mean)
    out.append(f'<line x1="{bx:.1f}" y1="{PAD_T - 5}" x2="{bx:.1f}" y2="{height - 25}" class="base"/>'
               f'<text x="{bx + 3:.1f}" y="{PAD_T - 8}" class="tick">baseline {baseline_mean:.3f}</text>')
    for i, r in enumerate(pts):
        y = PAD_T + H * i + H / 2
        ci = r.get("ci") or [None, None]
        cls = "win" if ci[0] is not None and ci[0] > 0 else "loss" if ci[1] is not None and ci[1] < 0 else "flat"
        if None not in ci:
            out.append(f'<line x1="{x(baseline_mean + ci[0]):.1f}" y1="{y:.1f}" x2="{x(baseline_mean + ci[1]):.1f}" '
                       f'y2="{y:.1f}" class="ci {cls}"/>')
        out.append(f'<circle cx="{x(r["candidate_mean"]):.1f}" cy="{y:.1f}" r="5" class="{cls}">'
                   f'<title>{escape(r["id"])}: {r["candidate_mean"]:.3f} (Δ {_fmt(r.get("diff"))}, n={r.get("n")})'
                   f'</title></circle>'
                   f'<text x="{PAD_L - 8}" y="{y + 4:.1f}" class="lab" text-anchor="end">{escape(r["id"])}</text>')
    out.append("</svg>")
    return "".join(out)


def pareto_plot(eval_name: str, points: list[dict[str, Any]]) -> str:
    """Score (y) against cost per call (x); Pareto-optimal points joined by the front (lower cost, higher score)."""
    pts = [p for p in points if p.get("score") is not None and p.get("cost") is not None]
    if not pts:
        return f"<p>No cost data for <b>{escape(eval_name)}</b>.</p>"
    width, height, pl, pb, pt = W, 300, 70, 40, 30
    xs, ys = [p["cost"] for p in pts], [p["score"] for p in pts]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    xm, ym = max((xhi - xlo) * 0.1, xhi * 0.05, 1e-9), max((yhi - ylo) * 0.1, 0.02)
    x = _scale(xlo - xm, xhi + xm, pl, width - PAD_R)
    y = _scale(ylo - ym, yhi + ym, height - pb, pt)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(eval_name)}: score against cost">'),
           f'<text x="{pl}" y="18" class="t">{escape(eval_name)}: mean score vs cost per call (USD)</text>',
           f'<line x1="{pl}" y1="{height - pb}" x2="{width - PAD_R}" y2="{height - pb}" class="axis"/>',
           f'<line x1="{pl}" y1="{pt}" x2="{pl}" y2="{height - pb}" class="axis"/>']
    for tick in _ticks(xlo - xm, xhi + xm):
        out.append(f'<text x="{x(tick):.1f}" y="{height - pb + 16}" class="tick">{tick:.2g}</text>')
    for tick in _ticks(ylo - ym, yhi + ym):
        out.append(f'<text x="{pl - 6}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">{tick:g}</text>')
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: p["cost"])
    if len(front) > 1:
        path = " ".join(f"{x(p['cost']):.1f},{y(p['score']):.1f}" for p in front)
        out.append(f'<polyline points="{path}" class="front"/>')
    for p in pts:
        cls = "base-pt" if p.get("baseline") else ("win" if p.get("pareto") else "flat")
        out.append(f'<circle cx="{x(p["cost"]):.1f}" cy="{y(p["score"]):.1f}" r="5" class="{cls}">'
                   f'<title>{escape(p["id"])}: score {p["score"]:.3f}, ${p["cost"]:.6f}/call</title></circle>'
                   f'<text x="{x(p["cost"]) + 7:.1f}" y="{y(p["score"]) - 6:.1f}" class="lab">{escape(p["id"])}</text>')
    out.append("</svg>")
    return "".join(out)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** __import__("math").floor(__import__("math").log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = -(-lo // step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step) + 1)]


CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
.t{font-weight:600;font-size:13px}.tick{font-size:11px;fill:#666}.lab{font-size:12px}
.grid{stroke:#eee}.axis{stroke:#999}.base{stroke:#555;stroke-dasharray:4 3}.ci{stroke-width:3}
.win{fill:#1a7f37;stroke:#1a7f37}.loss{fill:#cf222e;stroke:#cf222e}.flat{fill:#777;stroke:#777}
.base-pt{fill:#fff;stroke:#333;stroke-width:2}.front{fill:none;stroke:#1a7f37;stroke-dasharray:5 3}
.muted{color:#666}"""


def render_html(report: Report) -> str:
    """The whole page for one report document."""
    cands = report.candidates
    evals = sorted({e for c in cands for e in c.evals}, key=lambda e: (e != report.primary_eval, e))
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>selfimprove evaluate: "
             f"{escape(report.target)}</title><style>{CSS}</style></head><body>"),
             f"<h1>Evaluation of {escape(report.target)}</h1>",
             (f"<p class='muted'>run {escape(report.run)} · split {escape(report.split)} (n={report.n_samples}) · "
             f"baseline {escape(report.baseline.mode)} · primary eval "
             f"{escape(report.primary_eval)} · best {escape(str(report.best))} · "
             f"{report.calls} calls · ${report.cost_usd:.4f}</p>")]
    if not report.held_out:
        parts.append(f"<p><b>Not held-out evidence:</b> these samples come from the '{escape(report.split)}' split, "
                     "which the candidates were learned from; it cannot promote.</p>")
    if report.judge_override:
        parts.append(f"<p>Judge override: <code>{escape(str(report.judge_override.model_dump()))}</code></p>")
    parts.append("<table><tr><th>candidate</th><th>eval</th><th>baseline</th><th>candidate</th><th>Δ</th>"
                 "<th>95% CI</th><th>n</th><th>W/T/L</th><th>sign p</th><th>SPRT</th></tr>")
    for c in cands:
        for name in evals:
            e = c.evals.get(name)
            if not e:
                continue
            ci = e.ci or (None, None)
            parts.append(f"<tr><td>{escape(c.id)}</td><td>{escape(name)}</td><td>{_fmt(e.baseline_mean)}</td>"
                         f"<td>{_fmt(e.candidate_mean)}</td><td>{_fmt(e.diff)}</td>"
                         f"<td>[{_fmt(ci[0])}, {_fmt(ci[1])}]</td><td>{e.n}</td>"
                         f"<td>{e.wins}/{e.ties}/{e.losses}</td><td>{_fmt(e.sign_p)}</td>"
                         f"<td>{escape(e.sprt.decision if e.sprt else '–')}</td></tr>")
    parts.append("</table>")
    for name in evals:
        rows = [{"id": c.id, **c.evals[name].model_dump()} for c in cands if name in c.evals]
        base = next((r["baseline_mean"] for r in rows if r["baseline_mean"] is not None), None)
        parts.append(f"<h2>{escape(name)}</h2>")
        parts.append(ci_plot(name, rows, base))
        b = report.baseline
        points = [{"id": "baseline", "baseline": True, "pareto": name in b.pareto_evals,
                   "score": b.means.get(name, base), "cost": b.cost.per_call_usd}]
        points += [{"id": c.id, "score": c.evals[name].candidate_mean, "pareto": name in c.pareto_evals,
                    "cost": c.cost.per_call_usd} for c in cands if name in c.evals]
        parts.append(pareto_plot(name, points))
    parts.append("</body></html>\n")
    return "".join(parts)
