"""`selfimprove sim` commands, through Typer's CliRunner and as `python -m selfimprove.cli.sim` (how the simulator runs as a subprocess)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from selfimprove.cli.sim import app


def test_help_lists_both_commands_and_their_options():
    runner = CliRunner()
    out = runner.invoke(app, ["--help"]).output
    assert "serve" in out and "traffic" in out and "simulator" in out.lower()
    serve = runner.invoke(app, ["serve", "--help"]).output
    for flag in ("--world", "--port", "--seed", "--latency-ms", "--jitter-ms", "--error-rate", "--rate-limit", "--knob"):
        assert flag in serve
    traffic = runner.invoke(app, ["traffic", "--help"]).output
    for flag in ("--world", "--n", "--phoenix", "--project", "--policy", "--seed", "--chain", "--eval-on",
                 "--humans", "--human-flip"):
        assert flag in traffic


def test_traffic_refuses_evals_above_the_span_without_chain_spans():
    out = CliRunner().invoke(app, ["traffic", "--phoenix", "http://127.0.0.1:9", "--project", "p", "--eval-on",
                                   "parent", "--sim-url", "http://127.0.0.1:9/v1", "--json"])
    assert out.exit_code == 2 and "--chain" in out.output


def test_serve_rejects_unknown_world_and_knob_as_usage_errors():
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--world", "nope"]).exit_code == 2
    assert runner.invoke(app, ["serve", "--knob", "bogus=1"]).exit_code == 2
    assert runner.invoke(app, ["serve", "--knob", "novalue"]).exit_code == 2


def test_python_dash_m_serve_prints_base_url_and_applies_knobs():
    import openai
    import pytest

    proc = subprocess.Popen([sys.executable, "-m", "selfimprove.cli.sim", "serve", "--world", "routing",
                             "--error-rate", "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "hi"}])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_json_prints_one_document_as_soon_as_it_is_up_then_keeps_serving():
    import json
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "selfimprove.cli.sim", "serve", "--world", "routing", "--seed", "7",
                             "--json"], stdout=subprocess.PIPE, text=True)
    try:
        doc = json.loads(proc.stdout.readline())
        assert doc == {"schema": "selfimprove.sim.serve/1", "base_url": doc["base_url"], "world": "routing",
                       "seed": 7, "pid": proc.pid}
        assert doc["base_url"].startswith("http://127.0.0.1:") and doc["base_url"].endswith("/v1")
        with urllib.request.urlopen(doc["base_url"] + "/models", timeout=5) as r:  # still serving after the line
            models = {m["id"] for m in json.load(r)["data"]}
        assert {"sim-small", "sim-judge", "sim-optimizer"} <= models
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) is not None
