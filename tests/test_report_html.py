"""report.html from a hand-made report: verdict first, Δ chart on a Δ axis, escaped user text, readable money,
fixed and broken samples chosen by the primary eval's change (direction-aware)."""

from __future__ import annotations

import re

from selfimprove.core.records import Message, Policy, Sample
from selfimprove.core.report import Report
from selfimprove.evaluation.html import delta_chart, money, render_html
from selfimprove.evaluation.page import fixed_and_broken, report_page


def make_report(direction="maximize", best="c1") -> Report:
    stats = {"direction": direction, "baseline_mean": 0.4, "candidate_mean": 0.9, "diff": 0.5, "ci": [0.3, 0.7],
             "n": 4, "wins": 3, "ties": 1, "losses": 0}
    return Report.model_validate({
        "target": "t", "run": "r1", "split": "test", "n_samples": 4,
        "inputs": {"dataset": "sha256:d", "checkpoint": "sha256:c"}, "primary_eval": "q",
        "baseline": {"policy_digest": "sha256:b", "mode": "replay", "cost": {"per_call_usd": 0.0000312}},
        "candidates": [{"id": "c1", "policy_digest": "sha256:p", "candidate_digest": "sha256:f", "passed_guards": True,
                        "n_samples": 4, "evals": {"q": stats}, "cost": {"per_call_usd": 0.0000421}}],
        "best": best, "settings": {"alpha": 0.05, "beta": 0.1, "min_effect": 0.15, "seed": 0},
        "stored_only": [{"name": "human.q", "why": "people's labels cannot be replayed", "stored_mean": 0.5, "n": 3}],
        "human_agreement": [{"judge": "q", "human": "human.q", "n": 12, "agree": 6, "percent": 0.5, "kappa": 0.1,
                             "flagged": True}]})


def samples():
    return [Sample(sample_id=f"s{i}", span_id=f"p{i}", trace_id=f"t{i}",
                   history=(Message(role="user", content=f"question {i} <script>alert(1)</script>"),)) for i in range(4)]


def rows():
    scores = {"s0": (0.0, 1.0), "s1": (0.0, 0.5), "s2": (1.0, 0.0), "s3": (1.0, 1.0)}
    out = []
    for sid, (b, c) in scores.items():
        out.append({"policy": "baseline", "sample_id": sid, "eval": "q", "score": b, "label": "x",
                    "output": f"base {sid}", "explanation": f"why base {sid} <b>", "gen_error": None, "error": None})
        out.append({"policy": "c1", "sample_id": sid, "eval": "q", "score": c, "label": "y",
                    "output": f"cand {sid}", "explanation": f"why cand {sid}", "gen_error": None, "error": None})
    return out


class Decision:
    passed, reasons, warnings = False, ("primary eval 'q' gain is not significant",), ()


def test_examples_follow_the_primary_change_and_its_direction():
    ex = fixed_and_broken(make_report(), rows(), samples(), "c1")
    assert [(e.kind, e.sample_id) for e in ex] == [("fixed", "s0"), ("fixed", "s1"), ("broken", "s2")]
    ex = fixed_and_broken(make_report("minimize"), rows(), samples(), "c1")  # lower is better: roles swap
    assert [(e.kind, e.sample_id) for e in ex] == [("fixed", "s2"), ("broken", "s0"), ("broken", "s1")]


def test_page_puts_the_verdict_first_and_escapes_user_text():
    base = Policy(system_prompt="Be helpful.", model="m")
    cand = Policy(system_prompt="Be helpful.\nQuote the <order> id.", model="m")
    page = report_page(make_report(), rows(), samples(), base, {"c1": cand}, decision=Decision(), simulated=True)
    html = render_html(page)
    assert html.index("Gate not passed: c1") < html.index("<table") < html.index("<svg")
    assert "gain is not significant" in html and "SIMULATOR" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "why base s0 &lt;b&gt;" in html
    assert "+Quote the &lt;order&gt; id." in html
    assert "Not replayed (not part of the gate)" in html and "people&#x27;s labels cannot be replayed" in html
    assert "people disagree" in html and "<td>0.10</td>" in html  # the flagged judge and its kappa
    assert "$0.0000312" in html and not re.search(r"\d[eE]-\d", html)


def test_delta_chart_draws_the_interval_around_delta_not_around_the_mean():
    svg = delta_chart("c1", list(make_report().candidates[0].evals.items()))
    zero = float(re.search(r'<line x1="([\d.]+)"[^>]*class="zero"', svg).group(1))
    x1, x2 = (float(v) for v in re.search(r'<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"[^>]*class="ci', svg).groups())
    dot = float(re.search(r'<circle cx="([\d.]+)"', svg).group(1))
    assert zero < x1 < dot < x2  # CI [0.3, 0.7] lies right of 0, the Δ 0.5 inside it
    assert abs((dot - x1) - (x2 - dot)) < 0.2  # symmetric CI, symmetric bar (coordinates rounded to 0.1)


def test_money_is_readable():
    assert [money(x) for x in (None, 0, 12.345, 0.0042, 0.0000312)] == ["unknown", "$0", "$12.35", "$0.0042",
                                                                        "$0.0000312"]


def test_only_the_simulator_is_labelled_simulator():
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from selfimprove.llm.endpoint import is_simulator
    from selfimprove.sim import start_server

    class OtherProvider(BaseHTTPRequestHandler):
        def do_GET(self):  # an OpenAI-compatible server that is not ours
            body = json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "vllm"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), OtherProvider)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    sim = start_server("support")
    try:
        assert is_simulator(sim.base_url)
        assert not is_simulator(f"http://127.0.0.1:{other.server_address[1]}/v1")
        assert not is_simulator(None) and not is_simulator("http://127.0.0.1:9/v1")  # OpenAI; nothing listening
    finally:
        sim.stop()
        other.shutdown()
