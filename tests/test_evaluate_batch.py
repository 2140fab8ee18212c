"""Replays and judge calls through the simulator's Batch API: the same results and digests as the online path at
half the price, `evaluate --batch` in waves, and a stage killed with a batch in flight resumes without resending."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate, eval_specs
from sim_helpers import kill_once_submitted
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.config.load import load_config
from selfimprove.core.records import Message, Policy, Sample
from selfimprove.evaluation.replay import PolicyScorer, score_policy
from selfimprove.llm.accounting import PriceTable
from selfimprove.llm.batch_journal import BatchJournal
from selfimprove.sim import PRICES, default_policy, generate_inputs, start_server
from selfimprove.store.tables import table_digest, write_table

VOLATILE = ["latency_ms", "gen_latency_ms", "cached", "gen_cached"]  # a batch call has no latency of its own


@pytest.fixture
def sim():
    with start_server("support", seed=5, batch_delay_s=0.1, mode="subprocess") as server:
        yield server


@pytest.mark.parametrize("n", [pytest.param(500, marks=pytest.mark.slow), 60])
def test_a_replay_through_batches_matches_the_online_path_at_half_the_price(tmp_path, sim, n):
    """The issue's measure at n=500 (slow: `make test-slow`); the same at n=60 in `make test`."""
    from fixtures.sim_checkpoint import config_text

    (tmp_path / "support.toml").write_text(config_text(sim.base_url) + "[llm.batch]\npoll_s = 0.1\ngather_s = 0.1\n")
    cfg = load_config(tmp_path / "support.toml", [])
    policy = Policy(**default_policy("support"))
    samples = [Sample(sample_id=f"s{i:03d}", span_id=f"p{i}", trace_id=f"t{i}", split="test",
                      history=tuple(Message(**m) for m in h[:-1]) + (Message(**{**h[-1], "content": f"{h[-1]['content']} (ticket {i})"}),))
               for i, h in enumerate(generate_inputs("support", n, 2))]
    specs = eval_specs()
    online = PolicyScorer.from_config(cfg, cache_dir=tmp_path / "online", evals=specs, concurrency=32)
    batch = PolicyScorer.from_config(cfg, cache_dir=tmp_path / "batch", evals=specs,
                                     batch_dir=tmp_path / "batches")
    a = score_policy(policy, samples, specs, scorer=online)
    sim.reset_stats()
    b = score_policy(policy, samples, specs, scorer=batch)
    stats = sim.stats()["by_endpoint"]
    assert stats.get("/v1/chat/completions", 0) == 0 and stats["batch:/v1/chat/completions"] == 4 * n
    assert stats["POST /v1/batches"] == 2  # the replays, then the judge calls that needed their outputs
    assert len(a) == len(b) == 3 * n and a["error"].isna().all() and b["error"].isna().all()
    assert b["gen_latency_ms"].isna().all() and a["gen_latency_ms"].notna().all()
    digests = [table_digest(write_table(tmp_path / f"{name}.parquet", f.drop(columns=VOLATILE)))
               for name, f in (("a", a), ("b", b))]
    assert digests[0] == digests[1]
    assert sorted(p.name for p in (tmp_path / "online").rglob("*.json")) == \
        sorted(p.name for p in (tmp_path / "batch").rglob("*.json"))  # the same request digests
    on, off = online.ledger.snapshot(), batch.ledger.snapshot()
    assert (off.calls, off.batched, off.tokens) == (on.calls, 4 * n, on.tokens) and on.batched == 0
    assert off.cost_usd == pytest.approx(on.cost_usd / 2)


def _evaluate(root, *args):
    result = CliRunner().invoke(app, ["evaluate", "--root", str(root), "--json", "--yes", "--candidates", "all",
                                      *args])
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout)


def test_evaluate_batch_decides_in_waves_like_the_online_loop(tmp_path, sim):
    better = candidate(Policy(**{**default_policy("support"), "system_prompt": BETTER_PROMPT}))
    build_run(tmp_path / "a", sim.base_url, n=60, candidates=[better], concurrency=20)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with (tmp_path / "b" / "configs" / "support.toml").open("a") as fh:
        fh.write("[llm.batch]\nwave = 20\npoll_s = 0.05\ngather_s = 0.05\n")
    online = _evaluate(tmp_path / "a", "--no-batch")
    sim.reset_stats()
    batched = _evaluate(tmp_path / "b", "--batch")
    assert sim.stats()["by_endpoint"].get("/v1/chat/completions", 0) == 0
    a, b = online["report"], batched["report"]
    assert a["candidates"][0]["decision"]["stop"] in ("efficacy", "final")  # a real decision, the same one:
    assert b["candidates"][0]["cost"].pop("latency_ms_p50") is None and b["baseline"]["cost"].pop("latency_ms_p50") is None
    for entry in (a["candidates"][0], a["baseline"]):
        entry["cost"].pop("latency_ms_p50")
    assert (a["candidates"], a["baseline"]) == (b["candidates"], b["baseline"])
    assert batched["spent"]["batched"] == batched["spent"]["calls"] > 0
    # every call was paid at half its list price (online spent more: its prefetched next batch, equal requests twice)
    run_dir = tmp_path / "b" / "runs" / "support" / batched["run"]
    entries = [json.loads(p.read_text()) for p in (run_dir / "cache" / "llm").rglob("*.json")]
    assert len(entries) == batched["spent"]["calls"]
    list_price = sum(PriceTable(PRICES).cost(e["response"]["model"], e["response"]["usage"]["prompt_tokens"],
                                             e["response"]["usage"]["completion_tokens"]) for e in entries)
    assert batched["spent"]["cost_usd"] == pytest.approx(list_price / 2, abs=1e-6)
    assert online["spent"]["cost_usd"] > list_price / 2
    records = list(BatchJournal(run_dir / "cache" / "batches").records())
    assert records and all(r.state == "collected" for r in records)


def test_evaluate_batch_killed_with_a_batch_in_flight_resumes_without_resending(tmp_path, sim):
    better = candidate(Policy(**{**default_policy("support"), "system_prompt": BETTER_PROMPT}))
    _, run, *_ = build_run(tmp_path, sim.base_url, n=20, candidates=[better])
    with (tmp_path / "configs" / "support.toml").open("a") as fh:
        fh.write("[llm.batch]\nwave = 20\npoll_s = 0.05\ngather_s = 0.05\n")
    sim.configure(batch_delay_s=3600)
    kill_once_submitted([sys.executable, "-c", "from selfimprove.cli.app import main; main()", "evaluate",
                         "--root", str(tmp_path), "--batch", "--yes", "--json", "--candidates", "all"],
                        run.path / "cache" / "batches")
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 1
    sim.configure(batch_delay_s=0)
    out = _evaluate(tmp_path, "--batch")
    by_route = sim.stats()["by_endpoint"]
    # one batch of replays (resumed, not resent) and one of judge calls
    assert by_route["POST /v1/batches"] == 2 and by_route["POST /v1/files"] == 2
    assert by_route["batch:/v1/chat/completions"] == 20 * 2 + 20 * 2 * 3
    assert out["report"]["candidates"][0]["n_samples"] == 20
