"""`selfimprove demo` on a REAL MODEL endpoint (`--real`, `--base-url`): which mode the options pick, the estimate
and the `--yes` rule before spending, the labels, and that the key never reaches the workspace.

No real model is reachable here: the "real endpoint" is a simulator started by the test — to the product it is just
an OpenAI-compatible URL with models named on the command line, so the REAL MODEL path is what runs."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import UsageError
from selfimprove.demo.endpoint import estimate, resolve_endpoint

SENTINEL = "sk-" + "SENTINEL-7f3c9e1d-never-on-disk"  # split so that no key-shaped string is tracked
SIM_MODELS = ["--task-model", "sim-small", "--judge-model", "sim-judge", "--optimizer-model", "sim-optimizer"]


def test_no_real_option_means_the_simulator_even_with_a_key_set():
    ep = resolve_endpoint("support", environ={"OPENAI_API_KEY": SENTINEL})
    assert not ep.real and ep.label == "SIMULATOR" and ep.base_url is None and ep.judge_model == "sim-judge"


def test_real_defaults_to_openai_with_cheap_models_and_a_judge_other_than_the_task_model():
    ep = resolve_endpoint("support", real=True, environ={"OPENAI_API_KEY": SENTINEL})
    assert ep.real and ep.base_url == "https://api.openai.com/v1" and ep.api_key_env == "OPENAI_API_KEY"
    assert (ep.task_model, ep.judge_model, ep.optimizer_model) == ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-mini")
    assert ep.label == "REAL MODEL gpt-4o-mini at api.openai.com"
    assert SENTINEL not in ep.model_dump_json() and SENTINEL not in ep.notice
    est = estimate(ep, "support", 160)
    assert est["usd"] is not None and 0 < est["usd"] < 5 and est["total_calls"] == sum(est["calls"].values())
    ep2 = resolve_endpoint("support", base_url="http://10.0.0.9:8000/v1/", api_key_env="MY_KEY",
                           task_model="llama-3", environ={"MY_KEY": "x"})
    assert ep2.label == "REAL MODEL llama-3 at 10.0.0.9:8000" and ep2.base_url == "http://10.0.0.9:8000/v1"
    assert estimate(ep2, "support", 160)["usd"] is None  # no known price for llama-3: cost unknown, not $0


@pytest.mark.parametrize("kwargs, words", [
    ({"real": True}, "OPENAI_API_KEY is not set"),
    ({"base_url": "http://10.0.0.9/v1", "api_key_env": "MISSING_VAR"}, "MISSING_VAR is not set"),
    ({"task_model": "gpt-4o"}, "choose a real model"),
    ({"real": True, "api_key_env": SENTINEL}, "NAME of an environment variable"),
])
def test_bad_real_options_are_usage_errors(kwargs, words):
    with pytest.raises(UsageError, match=words):
        resolve_endpoint("support", environ={}, **kwargs)


def test_a_real_run_without_yes_shows_the_estimate_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    res = CliRunner().invoke(app, ["demo", "--real", "--workdir", str(tmp_path / "ws")])
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())  # Rich wraps long lines
    assert re.search(r"Estimate for REAL MODEL gpt-4o-mini at api\.openai\.com: at most \d+ calls", err)
    assert "about $" in err and "--yes" in err and "nothing was started" in err
    assert not (tmp_path / "ws").exists() and SENTINEL not in res.output


@pytest.mark.phoenix
def test_base_url_runs_the_real_model_path_and_never_writes_the_key(tmp_path, monkeypatch):
    from selfimprove.sim import start_server

    monkeypatch.setenv("SOME_VAR", SENTINEL)
    monkeypatch.delenv("SELFIMPROVE_DEMO_API_KEY", raising=False)
    endpoint = start_server("support", seed=0)  # an OpenAI-compatible URL; the product cannot know what it is
    try:
        res = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--traffic", "80", "--json",
                                       "--base-url", endpoint.base_url, "--api-key-env", "SOME_VAR", *SIM_MODELS,
                                       "--yes"])
        requests = endpoint.stats()
    finally:
        endpoint.stop()
    assert res.exit_code == 0, res.output
    err = " ".join(res.stderr.split())  # Rich wraps long lines
    host = endpoint.base_url.split("//", 1)[1].split("/", 1)[0]
    label = f"REAL MODEL sim-small at {host}"
    doc = json.loads(res.stdout)
    assert doc["mode"] == "real" and doc["simulator"] is False and doc["label"] == label
    assert doc["notice"].startswith(label) and doc["models"] == {"task": "sim-small", "judge": "sim-judge",
                                                                  "optimizer": "sim-optimizer"}
    assert doc["estimate"]["total_calls"] > 80 and "SIMULATOR" not in res.output  # never labelled as the simulator
    assert err.index(f"Estimate for {label}") < err.index("Phoenix UI:")  # shown before spending
    assert f"Running the loop ({label})" in err
    assert doc["outcome"] == "promoted", doc["loop"]
    assert doc["primary"]["ci"][0] > 0
    # the calls really went to the given base_url (no simulator of the demo's own)
    assert "Simulator (OpenAI-compatible" not in err
    by_model = requests["by_model"]
    assert by_model["sim-small"]["200"] >= 80 and by_model["sim-judge"]["200"] >= 80 * 3
    assert by_model["sim-optimizer"]["200"] >= 1
    ws = Path(doc["workspace"])
    config = (ws / "configs" / "demo.toml").read_text()
    assert 'api_key_env = "SOME_VAR"' in config and f'base_url = "{endpoint.base_url}"' in config
    assert 'model = "sim-optimizer"' in config and label in config
    # the key: nowhere in the output, nor in any file of the workspace (configs, runs, reports, Phoenix's sqlite)
    assert SENTINEL not in res.output
    files = [p for p in ws.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name.endswith(".db") for p in files)
    leaked = [str(p) for p in files if SENTINEL.encode() in p.read_bytes()]
    assert leaked == []



def test_a_loopback_endpoint_may_run_without_a_key_like_the_llm_layer():
    ep = resolve_endpoint("support", base_url="http://localhost:8000/v1", api_key_env="LOCAL_KEY",
                          task_model="local", environ={})
    assert ep.real and ep.label == "REAL MODEL local at localhost:8000" and ep.api_key_env == "LOCAL_KEY"
