"""`report.html`: one self-contained page (inline SVG and CSS, no scripts, no external resources) drawn from a
`ReportPage` (selfimprove.evaluation.page): the verdict and its reasons first, then the per-eval evidence,
the change in each eval with its 95% interval, the prompt diff, samples the candidate fixed and broke with the
judges' explanations, and cost. Pure string building: no I/O, no plotting library. Every piece of user text
(prompts, outputs, explanations, ids) is escaped.
"""

from __future__ import annotations

import math
from html import escape

from selfimprove.core.report import CandidateEntry, EvalStats, Report
from selfimprove.evaluation.page import Example, ReportPage, Side

W = 760  # chart width
ROW_H, PAD_L, PAD_R, PAD_T = 34, 190, 200, 34

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.muted{color:#666}
.banner{padding:.6em 1em;border-radius:6px;margin:.8em 0;font-weight:600}
.sim{background:#fff4d6;border:1px solid #e3b341}.warn{background:#ffebe9;border:1px solid #cf222e}
.verdict{padding:.8em 1em;border-radius:6px;margin:1em 0}.pass{background:#dafbe1;border:2px solid #1a7f37}
.fail{background:#ffebe9;border:2px solid #cf222e}.verdict h2{border:0;margin:0 0 .3em 0}
.t{font-weight:600;font-size:13px}.tick{font-size:11px;fill:#666}.lab{font-size:12px}.grid{stroke:#eee}
.zero{stroke:#333}.need{stroke:#1a7f37;stroke-dasharray:4 3}.ci{stroke-width:3}
.win{fill:#1a7f37;stroke:#1a7f37}.loss{fill:#cf222e;stroke:#cf222e}.flat{fill:#777;stroke:#777}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;white-space:pre-wrap}.add{color:#1a7f37}.del{color:#cf222e}
.ex{border:1px solid #ddd;border-radius:6px;margin:.8em 0;padding:.6em .8em}
.ex .cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}.ex .out{white-space:pre-wrap;background:#f6f8fa;
padding:.4em;border-radius:4px}.why{font-style:italic;color:#444}"""


def render_html(page: ReportPage) -> str:
    """The whole page."""
    r = page.report
    best = r.entry(r.best)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>selfimprove evaluate: {escape(r.target)}"
             f"</title><style>{CSS}</style></head><body>"), f"<h1>Evaluation of {escape(r.target)}</h1>"]
    if page.simulated:
        parts.append("<div class='banner sim'>SIMULATOR: every output, score and cost on this page comes from "
                     "selfimprove's built-in simulator, not from a real model.</div>")
    if not r.held_out:
        parts.append(f"<div class='banner warn'>Not held-out evidence: these samples come from the "
                     f"'{escape(r.split)}' split, which the candidates were learned from. It cannot promote.</div>")
    parts.append(_verdict(page))
    parts.append(f"<p class='muted'>run {escape(r.run)} · split {escape(r.split)} · {r.n_samples} samples · "
                 f"baseline {escape(r.baseline.mode)} · primary eval {escape(r.primary_eval)} · {r.calls} calls · "
                 f"{money(r.cost_usd)}{' · stopped: ' + escape(r.stopped) if r.stopped else ''}</p>")
    for c in ([best] if best else []) + [c for c in r.candidates if c is not best]:
        parts.append(_candidate_section(r, c, is_best=c is best))
    if page.prompt_diff:
        parts.append(f"<h2>What changed: baseline → {escape(r.best or '')}</h2>{_diff_html(page.prompt_diff)}")
    if page.examples:
        parts.append(_examples(page.examples, r.primary_eval))
    parts.append(_people(r))
    parts.append(_cost(r))
    parts.append("</body></html>\n")
    return "".join(parts)


def _verdict(page: ReportPage) -> str:
    r, v = page.report, page.verdict
    if v is None:
        why = "no candidate was evaluated" if not r.candidates else "no candidate was chosen as best"
        return f"<div class='verdict fail'><h2>Nothing to promote</h2><p>{escape(why)}.</p></div>"
    head = (f"Gate passed: {escape(v.candidate)} can be promoted" if v.passed
            else f"Gate not passed: {escape(v.candidate)} cannot be promoted")
    items = "".join(f"<li>{escape(x)}</li>" for x in v.reasons)
    notes = "".join(f"<li class='muted'>{escape(x)}</li>" for x in v.warnings)
    body = f"<ul>{items}{notes}</ul>" if items or notes else ""
    return (f"<div class='verdict {'pass' if v.passed else 'fail'}'><h2>{head}</h2>{body}<p class='muted'>The gate "
            "as `selfimprove promote` applies it with this target's [gate] settings; promote decides.</p></div>")


def _candidate_section(r: Report, c: CandidateEntry, *, is_best: bool) -> str:
    names = sorted(c.evals, key=lambda e: (e != r.primary_eval, e))
    verdicts = r.verdicts.get(c.id, {})
    rows = "".join(
        f"<tr><td>{escape(n)}{' (primary)' if n == r.primary_eval else ''}</td><td>{num(e.baseline_mean)}</td>"
        f"<td>{num(e.candidate_mean)}</td><td>{num(e.diff, sign=True)}</td><td>{ci_text(e.ci)}</td><td>{e.n}</td>"
        f"<td>{e.clusters}</td><td>{e.wins}/{e.ties}/{e.losses}</td><td>{_p_text(n == r.primary_eval, e)}</td>"
        f"<td>{escape(verdicts.get(n, '–'))}</td></tr>" for n, e in ((n, c.evals[n]) for n in names))
    title = f"{'Best candidate' if is_best else 'Candidate'} {escape(c.id)}"
    guards = "" if c.passed_guards else " <span class='del'>(failed its guard checks)</span>"
    d = c.decision
    test = "" if d is None or not d.reason else (
        f"<p>Decision test: {escape(d.reason)}; Holm-adjusted p {num(d.p_adjusted)} vs level {num(d.level)}; "
        f"effect corrected for early stopping {num(d.estimate_corrected, sign=True)}"
        + (f"; {escape(r.decision.correction)}" if r.decision else "") + ".</p>")
    return (f"<h2>{title}{guards}</h2><p class='muted'>{c.n_samples} samples scored · Δ = candidate − baseline, "
            "paired on the same held-out samples, on normalised scores ([0, 1], 1 best)</p>" + test +
            "<table><tr><th>eval</th><th>baseline</th><th>candidate</th><th>Δ</th><th>95% CI of Δ</th><th>n</th>"
            f"<th>clusters</th><th>W/T/L</th><th>p</th><th>verdict</th></tr>{rows}</table>"
            + delta_chart(c.id, [(n, c.evals[n]) for n in names], primary=r.primary_eval))


def _p_text(primary: bool, e: EvalStats) -> str:
    """The primary eval's decision-test p, or a guardrail's p of a drop."""
    if primary:
        return escape(f"{e.test.p_value:.3g} ({e.test.stop})") if e.test else "–"
    return f"{e.p_regression:.3g} (drop)" if e.p_regression is not None else "–"


def delta_chart(title: str, evals: list[tuple[str, EvalStats]], primary: str | None = None) -> str:
    """One row per eval: the change Δ (dot) and its 95% CI (bar) on a Δ axis with a line at 0. A bar that does
    not cross 0 is a significant change (green up, red down). Scores stay in their own units."""
    pts = [(n, e) for n, e in evals if e.diff is not None]
    if not pts:
        return "<p class='muted'>No scored pairs to chart.</p>"
    values = [0.0] + [v for _, e in pts for v in (e.diff, *(e.ci or ())) if v is not None]
    lo, hi = min(values), max(values)
    margin = max(0.02, (hi - lo) * 0.08)
    lo, hi = lo - margin, hi + margin
    height = PAD_T + ROW_H * len(pts) + 28
    x = _scale(lo, hi, PAD_L, W - PAD_R)
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" '
           f'aria-label="{escape(title)}: change per eval with 95% CI">'),
           f'<text x="{PAD_L}" y="16" class="t">Δ per eval (candidate − baseline), 95% CI</text>']
    for tick in _ticks(lo, hi):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{PAD_T - 6}" x2="{tx:.1f}" y2="{height - 24}" class="grid"/>'
                   f'<text x="{tx:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{tick:+g}</text>')
    out.append(f'<line x1="{x(0):.1f}" y1="{PAD_T - 6}" x2="{x(0):.1f}" y2="{height - 24}" class="zero"/>')
    for i, (name, e) in enumerate(pts):
        y = PAD_T + ROW_H * i + ROW_H / 2
        ci = e.ci
        cls = ("win" if ci and ci[0] > 0 else "loss" if ci and ci[1] < 0 else "flat")
        if e.direction == "minimize":  # lower is better: a negative Δ is the win
            cls = {"win": "loss", "loss": "win"}.get(cls, cls)
        if ci:
            out.append(f'<line x1="{x(ci[0]):.1f}" y1="{y:.1f}" x2="{x(ci[1]):.1f}" y2="{y:.1f}" class="ci {cls}"/>')
        out.append(f'<circle cx="{x(e.diff):.1f}" cy="{y:.1f}" r="5" class="{cls}"><title>{escape(name)}: '
                   f'Δ {e.diff:+.3f}, 95% CI {ci_text(ci)}, n={e.n}</title></circle>'
                   f'<text x="{PAD_L - 10}" y="{y + 4:.1f}" class="lab" text-anchor="end">{escape(_short(name))}'
                   f'{" ★" if name == primary else ""}</text>'
                   f'<text x="{W - PAD_R + 10}" y="{y + 4:.1f}" class="lab">{e.diff:+.3f} {ci_text(ci)}</text>')
    out.append("</svg>")
    return "".join(out)


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        lines.append(f"<span class='{cls}'>{escape(line)}</span>" if cls else escape(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _examples(examples: list[Example], primary: str) -> str:
    out = [f"<h2>Samples the candidate fixed and broke ({escape(primary)})</h2>"]
    for kind, title in (("fixed", "Fixed"), ("broken", "Broken")):
        chosen = [e for e in examples if e.kind == kind]
        if not chosen:
            out.append(f"<p class='muted'>{title}: none.</p>")
            continue
        for e in chosen:
            out.append(f"<div class='ex'><b>{title}</b> · sample {escape(e.sample_id)}<p><b>Input:</b> "
                       f"{escape(e.input)}</p><div class='cols'>{_side('baseline', e.baseline)}"
                       f"{_side('candidate', e.candidate)}</div></div>")
    return "".join(out)


def _side(name: str, s: Side) -> str:
    verdict = f"{escape(s.label or '–')} ({num(s.score)})"
    body = escape(s.output) if s.output is not None else f"<i>no output: {escape(s.error or 'failed')}</i>"
    why = f"<p class='why'>{escape(s.explanation)}</p>" if s.explanation else ""
    return f"<div><b>{name}</b> · {verdict}<div class='out'>{body}</div>{why}</div>"


def _people(r: Report) -> str:
    """Evals that were not replayed (people, unrecorded specs) and how far each LLM judge agrees with people."""
    out = []
    if r.stored_only:
        rows = "".join(f"<tr><td>{escape(e.name)}</td><td>{num(e.stored_mean)}</td><td>{e.n}</td><td>{escape(e.why)}"
                       "</td></tr>" for e in r.stored_only)
        out.append("<h2>Not replayed (not part of the gate)</h2><table><tr><th>eval</th><th>production mean</th>"
                   f"<th>n</th><th>why</th></tr>{rows}</table>")
    if r.human_agreement:
        rows = "".join(
            f"<tr><td>{escape(a.judge)}</td><td>{escape(a.human)}</td><td>{a.n}</td><td>{num(a.percent, 2)}</td>"
            f"<td>{num(a.kappa, 2)}</td><td>{'<b class=del>people disagree</b>' if a.flagged else 'ok'}</td></tr>"
            for a in r.human_agreement)
        out.append("<h2>LLM judges against people</h2><table><tr><th>judge</th><th>people</th><th>n</th>"
                   f"<th>agreement</th><th>Cohen's κ</th><th></th></tr>{rows}</table>")
    return "".join(out)


def _cost(r: Report) -> str:
    rows = [("baseline", r.baseline.cost)] + [(c.id, c.cost) for c in r.candidates]
    if all(c.per_call_usd in (None, 0) for _, c in rows):
        note = "<p class='muted'>No prices are configured for these models (llm.prices), so costs show as $0.</p>"
    else:
        note = ""
    pareto = {"baseline": r.baseline.pareto_evals, **{c.id: c.pareto_evals for c in r.candidates}}
    body = "".join(f"<tr><td>{escape(n)}</td><td>{money(c.per_call_usd)}</td><td>{num(c.tokens_per_call, 0)}</td>"
                   f"<td>{num(c.latency_ms_p50, 0)}{' ms' if c.latency_ms_p50 is not None else ''}</td><td>{escape(', '.join(pareto[n]) or '–')}</td></tr>"
                   for n, c in rows)
    return ("<h2>Cost per call</h2><table><tr><th>policy</th><th>cost per call</th><th>tokens per call</th>"
            f"<th>median latency</th><th>on the score/cost Pareto front for</th></tr>{body}</table>{note}")


def money(x: float | None) -> str:
    """US dollars without scientific notation: $12.35, $0.0042, $0.000031, $0."""
    if x is None or not math.isfinite(x):
        return "unknown"
    if x == 0:
        return "$0"
    if abs(x) >= 0.01:
        return f"${x:,.2f}"
    digits = min(8, 2 - math.floor(math.log10(abs(x))))
    return f"${x:.{digits}f}".rstrip("0")


def num(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def ci_text(ci: tuple[float, float] | None) -> str:
    return "–" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _short(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]

