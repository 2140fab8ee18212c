"""Provider faults (docs/reliability.md, "Provider faults"): a rate limit slows the LLM layer down instead of failing
rows, failed rows are counted and can refuse the gate, a budget stop ends cleanly, and `run` books exactly what the
provider (the simulator) served. Real openai SDK and phoenix-evals judges over HTTP to the simulator."""

import json
import os
import subprocess
import sys

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import Policy
from selfimprove.llm.throttle import limiter_for
from selfimprove.sim import PRICES, default_policy, start_server

BASE = Policy(**default_policy("support"))
BETTER = candidate(BASE.model_copy(update={"system_prompt": BETTER_PROMPT}), parent="seed")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def root(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    build_run(tmp_path, sim.base_url, n=8, candidates=[BETTER])
    sim.reset_stats()
    yield tmp_path
    sim.configure(rate_limit=None, error_rate=0.0)


def paid_dollars(stats) -> float:
    return sum((t["prompt"] * PRICES[m]["input"] + t["completion"] * PRICES[m]["output"]) / 1e6
               for m, t in stats["tokens"].items())


def test_a_rate_limit_slows_evaluate_down_and_fails_no_row(root, sim):
    sim.configure(rate_limit=8)  # a bucket of 8: the first 16 concurrent calls are sure to meet 429s
    cuts = limiter_for(sim.base_url).cuts
    res = cli("evaluate", "--root", root, "--json", "--candidates", "all", "--concurrency", "16")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    stats = sim.stats()
    assert stats["by_status"].get("429", 0) > 0  # it really was throttled
    assert limiter_for(sim.base_url).cuts > cuts  # and the limiter lowered the concurrency
    report = out["report"]
    (entry,) = report["candidates"]
    assert report["baseline"]["errors"] == entry["errors"] == {"generation": 0, "judgement": 0}
    assert entry["evals"]["policy_compliance"]["n"] == entry["n_samples"] == 8  # no pair lost to the 429s
    assert out["spent"]["calls"] == stats["requests"]  # every attempt booked, the 429s included
    assert out["spent"]["cost_usd"] == pytest.approx(paid_dollars(stats), abs=1e-6)
    assert not any("failed of" in w for w in out["warnings"])  # no row failed, so none is reported


def test_failed_rows_are_counted_and_too_many_refuse_the_gate(root, sim):
    sim.configure(error_rate=0.3, seed=5)
    # no retries (the judges use llm.task's endpoint settings here), so 500s fail rows
    res = cli("evaluate", "--root", root, "--json", "--candidates", "all", "--set", "llm.task.max_retries=0")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    (entry,) = out["report"]["candidates"]
    failed = sum(entry["errors"].values()) + sum(out["report"]["baseline"]["errors"].values())
    assert failed > 0 and any("failed of 8 samples" in w for w in out["warnings"])
    lost = entry["n_samples"] - entry["evals"]["policy_compliance"]["n"]
    assert lost >= 1
    res = cli("promote", "--root", root, "--dry-run", "--json", "--candidate", BETTER.id)
    assert res.exit_code == 3, res.output
    reasons = json.loads(res.stdout)["decision"]["reasons"]
    assert any(f"{lost} of 8 pairs" in r and "gate.max_failed_pairs = 5%" in r for r in reasons), reasons
    res = cli("promote", "--root", root, "--dry-run", "--json", "--candidate", BETTER.id, "--max-failed-pairs", "1")
    assert not any("lost to failed calls" in r for r in json.loads(res.stdout)["decision"]["reasons"])


def test_a_budget_stop_ends_cleanly(root, sim):
    env = dict(os.environ, SELFIMPROVE_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, "-c", "from selfimprove.cli.app import main; main()", "evaluate",
                           "--root", str(root), "--candidates", "all", "--yes", "--set", "evaluate.max_calls=12"],
                          check=False, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "evaluation stopped early (LLM call refused: the call budget of 12 is used up" in err
    assert "Task exception was never retrieved" not in err and "Traceback" not in err
    assert sim.stats()["requests"] <= 12


@pytest.mark.phoenix
def test_run_books_every_call_and_dollar_the_provider_served(tmp_path, phoenix, project_name, monkeypatch):
    from selfimprove.demo.run import KEY_ENV, demo_config
    from selfimprove.sim.traffic import make_traffic

    monkeypatch.setenv(KEY_ENV, "dummy")
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    server = start_server("support", seed=0)
    try:
        make_traffic("support", 40, phoenix_url=phoenix.url, project=project_name, sim_base_url=server.base_url,
                     seed=1)
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / "support.toml").write_text(demo_config(
            phoenix_url=phoenix.url, project=project_name, sim_base_url=server.base_url, primary="policy_compliance"))
        server.reset_stats()
        server.configure(throttle_rate=0.1, retry_after_s=0.05, seed=3)  # 429s at any speed
        res = cli("run", "--root", tmp_path, "--json", "--set", "update.max_calls=200")
        stats = server.stats()
    finally:
        server.stop()
    assert res.exit_code in (0, 3), res.output
    doc = json.loads(res.stdout)
    assert [s["stage"] for s in doc["steps"]][:4] == ["pull", "snapshot", "trigger", "update"]
    assert stats["by_status"].get("429", 0) > 0
    assert doc["calls"] == stats["requests"]  # update's and evaluate's, every attempt
    assert doc["cost_usd"] == pytest.approx(paid_dollars(stats), abs=1e-6)
