"""The `update` stage and command: checkpoint in, candidates/<id>.json + .diff and update.json out, on the simulator."""

import json
import re

import pytest
from optimizer_sim import eval_specs, production_samples, start_policy
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.canonical import digest
from selfimprove.core.errors import UsageError
from selfimprove.core.records import Candidate, Checkpoint
from selfimprove.dataset.table import read_samples, samples_to_frame
from selfimprove.sim import start_server
from selfimprove.stages.update import update
from selfimprove.store.runs import Workspace


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    server = start_server("support", seed=3)
    root = tmp_path_factory.mktemp("ws")
    (root / "configs").mkdir()
    (root / "configs" / "support.toml").write_text(f"""target = "support"
[llm.task]
base_url = "{server.base_url}"
model = "sim-small"
[llm.optimizer]
base_url = "{server.base_url}"
model = "sim-optimizer"
[update]
trials = 3
rounds = 2
minibatch = 8
max_calls = 300
""")
    train = production_samples(server.base_url, "support", 40, seed=1)
    test = production_samples(server.base_url, "support", 12, seed=9, split="test")
    policy, evals = start_policy("support"), eval_specs("support")
    run = Workspace(root).new_run("support")
    ck = Checkpoint(target="support", policy=policy, evals=evals, primary_eval="policy_compliance",
                    train_ids=tuple(s.sample_id for s in train), test_ids=tuple(s.sample_id for s in test),
                    counts={"train": len(train), "test": len(test)})
    with run.stage("snapshot", params={"seed": 0}) as st:
        st.write_table("dataset.parquet", samples_to_frame(train + test))
        st.write_json("checkpoint.json", {"schema": "selfimprove.checkpoint/1", **ck.model_dump(mode="json")})
    yield server, root, run, test
    server.stop()


def test_update_writes_candidates_and_diffs_and_never_sees_test(world):
    server, root, run, test = world
    server.reset_stats()
    result = update(root=root, target="support", yes=True)  # the product's replay scorer and phoenix-evals judges
    sent = [json.loads(p.read_text())["request"] for p in (run.path / "cache" / "llm").glob("??/*.json")]
    assert len(sent) == result.calls
    seen = set()  # every customer input that was replayed, judged or shown to the optimizer
    for body in sent:
        last = body["messages"][-1]["content"]
        if body["model"] == "sim-small":
            seen.add(last)
        seen.update(re.findall(r"\[Customer message\]: (.*?)\n\*", last, re.DOTALL))
        seen.update(re.findall(r"<input>\n(.*?)\n</input>", last, re.DOTALL))
    train_inputs = {s.history[0].content for s in read_samples(run.path / "dataset.parquet", split="train")}
    seen.discard("{input}")  # the eval templates shown to the optimizer
    assert seen and seen <= train_inputs
    assert {s.history[0].content for s in test} - train_inputs  # the test split has inputs of its own
    assert server.stats()["requests"] == result.calls <= 300
    assert result.best and result.best_val_mean > result.seed_val_mean
    files = sorted(p.name for p in (run.path / "candidates").iterdir())
    assert files == sorted([f"{c.id}.json" for c in result.candidates] + [f"{c.id}.diff" for c in result.candidates])
    for row in result.candidates:
        data = json.loads((run.path / f"candidates/{row.id}.json").read_text())
        assert data.pop("schema") == "selfimprove.candidate/1"
        cand = Candidate.model_validate(data)
        assert cand.id == "c-" + digest(cand.policy.model_dump(mode="json"))[7:19]
        assert cand.passed_guards == row.passed_guards and cand.guards
        diff = (run.path / f"candidates/{row.id}.diff").read_text()
        assert diff.startswith(f"--- {cand.parent}/policy\n+++ {cand.id}/policy")
        added = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        for e in cand.edits:
            if e.kind == "add":
                assert any(e.instruction.strip() in ln for ln in added), e.instruction
    best = json.loads((run.path / f"candidates/{result.best}.json").read_text())
    assert best["edits"] and all(e["addresses"] for e in best["edits"]) and best["rationale"]
    summary = json.loads((run.path / "update.json").read_text())
    assert summary["schema"] == "selfimprove.update/1" and summary["taxonomy"][0]["count"] > 0
    assert "update" in [s["stage"] for s in run.manifest()["stages"]]


def test_update_is_reused_and_the_cli_prints_candidates_and_diffs(world):
    server, root, _, _ = world
    server.reset_stats()
    runner = CliRunner()
    out = runner.invoke(app, ["update", "--root", str(root), "--target", "support", "--yes", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["schema"] == "selfimprove.update/1" and data["reused"] is True
    assert server.stats()["requests"] == 0  # same params, same inputs: nothing spent
    assert data["best"] in {c["id"] for c in data["candidates"]}
    human = runner.invoke(app, ["update", "--root", str(root), "--target", "support", "--yes"])
    assert human.exit_code == 0
    text = human.stderr
    assert data["best"] in text and "+++ " in text and "failure modes" in text
    assert "rejected" in text or all(c["passed_guards"] for c in data["candidates"])


def test_update_with_gepa_writes_only_its_own_candidates(world):
    pytest.importorskip("gepa")
    server, root, run, _ = world
    server.reset_stats()
    result = update(root=root, target="support", optimizer="gepa", max_calls=120, yes=True, force=True)
    assert result.optimizer == "gepa" and server.stats()["requests"] == result.calls <= 120
    on_disk = sorted(p.stem for p in (run.path / "candidates").glob("*.json"))
    assert on_disk == sorted(c.id for c in result.candidates)
    assert all(c.role == "gepa" and c.diff.startswith("---") for c in result.candidates)
    summary = json.loads((run.path / "update.json").read_text())
    assert summary["optimizer"] == "gepa" and summary["history"][0]["gepa_metric_calls"] > 0


def test_update_refuses_a_run_without_checkpoint_and_an_unknown_optimizer(world, tmp_path):
    _, root, _, _ = world
    with pytest.raises(UsageError, match="unknown optimizer"):
        update(root=root, target="support", optimizer="adam", yes=True)
    other = tmp_path / "ws"
    (other / "configs").mkdir(parents=True)
    (other / "configs" / "support.toml").write_text('target = "support"\n')
    Workspace(other).new_run("support")
    with pytest.raises(UsageError, match="no checkpoint"):
        update(root=other, target="support", yes=True)


def test_update_with_critiques_caches_them_and_the_cli_parses(world):
    server, root, run, _ = world
    server.reset_stats()
    result = update(root=root, target="support", critique=True, max_calls=400, yes=True, force=True)
    sent = [json.loads(p.read_text())["request"] for p in (run.path / "cache" / "llm").glob("??/*.json")]
    critiques = [b for b in sent if b.get("response_format", {}).get("json_schema", {}).get("name") == "sample_critique"]
    assert critiques and all(b["model"] == "sim-optimizer" for b in critiques)
    assert server.stats()["requests"] <= result.calls <= 400 and result.history[-1]["critique_calls"] > 0
    updates = [b["messages"][-1]["content"] for b in sent if "Task: propose the next step" in b["messages"][-1]["content"]]
    assert any("<critique>" in u for u in updates)
    server.reset_stats()
    again = update(root=root, target="support", critique=True, max_calls=400, yes=True, force=True)
    assert server.stats()["requests"] == 0 and again.calls == 0  # every call, critiques too, from the cache
    assert again.best == result.best and again.history[-1]["critiques"] == result.history[-1]["critiques"] > 0
    assert again.history[-1]["critique_calls"] == 0
    out = CliRunner().invoke(app, ["update", "--root", str(root), "--target", "support", "--yes", "--json",
                                   "--critique", "--max-calls", "400"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["schema"] == "selfimprove.update/1" and data["reused"] is True and server.stats()["requests"] == 0
    assert data["history"][-1]["critiques"] > 0


def test_update_batch_scores_through_the_batch_api_and_proposes_the_same_candidates(world):
    server, root, run, _ = world
    ws = Workspace(root)
    runs = {}
    for batch in (False, True):
        fresh = ws.new_run("support")
        for rel in ("dataset.parquet", "checkpoint.json"):
            (fresh.path / rel).write_bytes((run.path / rel).read_bytes())
        with fresh.stage("snapshot", params={"seed": 0}) as st:
            st.write_table("dataset.parquet", samples_to_frame(read_samples(run.path / "dataset.parquet")))
            st.write_json("checkpoint.json", json.loads((run.path / "checkpoint.json").read_text()))
        server.reset_stats()
        runs[batch] = update(root=root, target="support", run=fresh.run_id, trials=1, rounds=1, max_calls=150,
                             yes=True, batch=batch, force=True,
                             overrides=["llm.batch.poll_s=0.05", "llm.batch.gather_s=0.05",
                                        *(f"llm.prices.{m}.{k}=1.0" for m in ("sim-small", "sim-judge",
                                                                              "sim-optimizer") for k in ("input", "output"))])
        lines = server.stats()["by_endpoint"].get("batch:/v1/chat/completions", 0)
        assert (lines > 0) == batch
    online, batched = runs[False], runs[True]
    assert [c.id for c in batched.candidates] == [c.id for c in online.candidates]
    assert (batched.best, batched.best_val_mean) == (online.best, online.best_val_mean)
    assert batched.calls == online.calls and 0 < batched.cost_usd < online.cost_usd  # the optimizer's calls stay online
