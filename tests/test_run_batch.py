"""`selfimprove run --batch`: the whole loop (a real Phoenix, the simulator's Batch API through the real openai SDK,
phoenix-evals judges) with update's and evaluate's replays and judge calls sent as batches gives the online run's
candidates, decision and results, and books evaluate's calls at half their list price.

Lean on purpose (60 production calls, one target run twice); the 500-sample replay is in test_evaluate_batch's
slow tier."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from sim_helpers import kill_once_submitted
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.demo.run import KEY_ENV, demo_config
from selfimprove.llm.accounting import PriceTable
from selfimprove.llm.batch_journal import BatchJournal
from selfimprove.sim import PRICES, start_server
from selfimprove.sim.traffic import make_traffic
from selfimprove.store.runs import Workspace
from selfimprove.store.tables import table_digest, write_table

pytestmark = pytest.mark.phoenix
PRIMARY = "policy_compliance"
VOLATILE = ["latency_ms", "gen_latency_ms", "cached", "gen_cached"]  # a batch call has no latency of its own


def _workspace(root: Path, phoenix_url: str, project: str, sim_url: str, *, batch: bool) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "support.toml").write_text(demo_config(
        phoenix_url=phoenix_url, project=project, sim_base_url=sim_url, primary=PRIMARY, batch=batch))


def _run(root: Path, *args: str) -> dict:
    res = CliRunner().invoke(app, ["run", "--root", str(root), "--json", *args])
    assert res.exit_code in (0, 3), res.output
    return {**json.loads(res.stdout), "stderr": res.stderr}


def _results(run_path: str) -> pd.DataFrame:
    frame = pd.read_parquet(Path(run_path) / "results.parquet")
    return frame.drop(columns=[c for c in VOLATILE if c in frame])


def test_run_batch_gives_the_online_loop_at_the_batch_price(tmp_path, phoenix, project_name, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "dummy")
    with start_server("support", seed=0) as sim:
        made = make_traffic("support", 60, phoenix_url=phoenix.url, project=project_name,
                            sim_base_url=sim.base_url, seed=1)
        assert made["spans"] == 60
        # the demo's config with [llm.batch] enabled, turned off for this run by --no-batch ...
        _workspace(tmp_path / "online", phoenix.url, project_name, sim.base_url, batch=True)
        sim.reset_stats()
        online = _run(tmp_path / "online", "--no-batch")
        online_stats = sim.stats()
        assert online_stats["by_endpoint"].get("batch:/v1/chat/completions", 0) == 0
        # ... and a config without it, turned on by --batch
        _workspace(tmp_path / "batch", phoenix.url, project_name, sim.base_url, batch=False)
        sim.reset_stats()
        batched = _run(tmp_path / "batch", "--batch", "--set", "llm.batch.poll_s=0.1", "--set",
                       "llm.batch.gather_s=0.1")
        batch_stats = sim.stats()
        # a cron `run --batch` killed with a batch in flight: the next `run` finishes that run, resending nothing
        _workspace(tmp_path / "killed", phoenix.url, project_name, sim.base_url, batch=True)
        sim.reset_stats()
        sim.configure(batch_delay_s=3600)
        kill_once_submitted([sys.executable, "-c", "from selfimprove.cli.app import main; main()", "run", "--root",
                             str(tmp_path / "killed"), "--json"], tmp_path / "killed" / "runs" / "demo" / "*" /
                            "cache" / "batches")
        sim.configure(batch_delay_s=0)
        resumed = _run(tmp_path / "killed")
        resumed_stats = sim.stats()["by_endpoint"]
    online_tokens, batch_tokens, stats = online_stats["tokens"], batch_stats["tokens"], batch_stats["by_endpoint"]
    assert stats["batch:/v1/chat/completions"] > 0 and stats["POST /v1/batches"] >= 2
    # the batches' progress is on stderr (a batch may take hours)
    assert "submitted batch" in batched["stderr"] and "collected batch" in batched["stderr"]
    assert "submitted batch" not in online["stderr"]
    assert online["outcome"] == batched["outcome"] == "promoted"
    assert [s["stage"] for s in batched["steps"]] == [s["stage"] for s in online["steps"]]
    assert batched["decision"] == online["decision"] and batched["primary"] == online["primary"]
    a, b = Path(online["run_path"]), Path(batched["run_path"])
    assert json.loads((a / "update.json").read_text())["best"] == json.loads((b / "update.json").read_text())["best"]
    digests = [table_digest(write_table(tmp_path / f"{name}.parquet", _results(p)))
               for name, p in (("a", online["run_path"]), ("b", batched["run_path"]))]
    assert digests[0] == digests[1]
    # evaluate's calls all went through batches, each booked at half its list price
    evaluate = next(s for s in batched["steps"] if s["stage"] == "evaluate")
    assert "through the Batch API" in evaluate["detail"]
    report = json.loads((b / "report.json").read_text())
    assert report["candidates"][0]["cost"]["latency_ms_p50"] is None
    records = list(BatchJournal(b / "cache" / "batches").records())
    assert records and all(r.state == "collected" and r.requests == () for r in records)  # closed
    assert not list((b / "cache" / "batches").glob("*.jsonl"))
    assert CliRunner().invoke(app, ["verify", "--root", str(tmp_path / "batch")]).exit_code == 0
    # resumed: the killed run finished (no second pull), with the same result, and not one line sent twice
    assert resumed["steps"][0]["status"] == "resumed" and "without sending them again" in resumed["steps"][0]["detail"]
    assert "resuming the interrupted run" in resumed["steps"][2]["detail"]
    assert [r.run_id for r in Workspace(tmp_path / "killed").runs("demo")] == [resumed["run"]]
    assert (resumed["outcome"], resumed["decision"], resumed["primary"]) == \
        (batched["outcome"], batched["decision"], batched["primary"])
    assert resumed_stats["batch:/v1/chat/completions"] == stats["batch:/v1/chat/completions"]
    assert resumed_stats["POST /v1/batches"] == stats["POST /v1/batches"]
    assert not any(step["stage"] == "evaluate" and "Batch API" in step["detail"] for step in online["steps"])
    # the ledger's prices: the simulator's token counts at list price online; under --batch the task model's and
    # the judges' (every one of their calls went through a batch) at half, the optimizer's (online) at list price
    assert online["cost_usd"] == pytest.approx(_cost(online_tokens, batched=()), abs=1e-5)
    assert batched["cost_usd"] == pytest.approx(_cost(batch_tokens, batched=("sim-small", "sim-judge")), abs=1e-5)


def _cost(tokens: dict, batched: tuple[str, ...]) -> float:
    prices = PriceTable(PRICES)
    return sum(prices.cost(m, t.get("prompt", 0), t.get("completion", 0)) * (0.5 if m in batched else 1.0)
               for m, t in tokens.items())
