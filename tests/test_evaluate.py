"""`selfimprove evaluate` end to end against the simulator over HTTP, with real phoenix-evals judges.

A small run (50 samples of the support world, judged by the simulated judge) is built once per module with the
store API (no Phoenix needed) and copied for each test, so every test starts with an empty call cache.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import Policy
from selfimprove.sim import default_policy, start_server
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run

BASE = Policy(**default_policy("support"))
BETTER = candidate(BASE.model_copy(update={"system_prompt": BETTER_PROMPT}), parent="seed")
SAME = candidate(BASE.model_copy(update={"system_prompt": BASE.system_prompt + "\n"}), parent="seed")
LONG = candidate(BASE.model_copy(update={"system_prompt": BASE.system_prompt + " Be nice."}), passed=False)


@pytest.fixture(scope="module")
def sim():
    server = start_server("support", seed=0, mode="subprocess")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def built(sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate-template")
    build_run(root, sim.base_url, n=50, candidates=[BETTER, SAME, LONG], max_calls=5000)
    shutil.rmtree(root / "production-cache")
    return root


@pytest.fixture
def root(built, tmp_path, sim, monkeypatch):
    monkeypatch.delenv("SIM_API_KEY", raising=False)
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    dest = tmp_path / "ws"
    shutil.copytree(built, dest)
    sim.configure(error_rate=0.0, throttle_rate=0.0, latency_ms=0)
    sim.reset_stats()
    return dest


def cli(*args):
    return CliRunner().invoke(app, ["evaluate", *args], catch_exceptions=False)


def chat_requests(sim) -> dict:
    return sim.stats()["by_status"]


def test_better_candidate_is_significantly_better_identical_is_not(root, sim):
    res = cli("--root", str(root), "--json", "--concurrency", "16", "--candidates", "all")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["schema"] == "selfimprove.evaluate/1"
    report = out["report"]
    assert report["schema"] == "selfimprove.report/2" and report["baseline"]["mode"] == "replay"
    entries = {c["id"]: c for c in report["candidates"]}
    assert set(entries) == {BETTER.id, SAME.id}  # the failed-guards candidate is skipped unless named
    better = entries[BETTER.id]["evals"]["policy_compliance"]
    assert better["ci"][0] > 0 and better["test"]["decision"] == "accept_h1" and better["diff"] > 0.2
    same = entries[SAME.id]["evals"]["policy_compliance"]
    assert same["ci"][0] <= 0 <= same["ci"][1] and same["test"]["decision"] != "accept_h1"
    assert report["best"] == BETTER.id
    # the sequential test stopped both early: fewer samples than the 50 held out, recorded per candidate
    assert all(c["n_samples"] < 50 for c in report["candidates"])
    assert better["test"]["n_used"] <= better["n"] == entries[BETTER.id]["n_samples"]
    # every decision states n, clusters, the test, its correction and why it stopped; the gate used that p
    decision = entries[BETTER.id]["decision"]
    assert decision["passed"] and decision["stop"] == "efficacy" and decision["reason"].startswith("decided at n = ")
    assert decision["n"] == better["test"]["n_used"] and decision["clusters"] >= 1
    assert decision["p_value"] == better["test"]["p_value"] <= decision["p_adjusted"] <= decision["level"]
    assert decision["level"] == pytest.approx(0.05) and decision["p_adjusted"] == pytest.approx(
        min(1.0, 2 * min(better["test"]["p_value"], same["test"]["p_value"])) if better["test"]["p_value"] <=
        same["test"]["p_value"] else decision["p_adjusted"])
    assert "Holm over 2 candidate(s)" in report["decision"]["correction"]
    assert better["test"]["level"] == pytest.approx(0.025)  # alpha / 2 candidates: the first Holm step
    assert not entries[SAME.id]["decision"]["passed"] and entries[SAME.id]["decision"]["reasons"]
    cost = entries[BETTER.id]["cost"]
    assert cost["per_call_usd"] > cost["baseline_per_call_usd"] > 0  # the longer prompt costs more per call
    run = Workspace(root).open_run("support")
    frame = pd.read_parquet(run.path / "results.parquet")
    assert list(frame[["policy", "sample_id", "eval"]].itertuples(index=False)) == sorted(
        frame[["policy", "sample_id", "eval"]].itertuples(index=False))
    assert set(frame["policy"]) == {"baseline", BETTER.id, SAME.id} and frame["error"].isna().all()
    n_rows = sum(c["n_samples"] for c in report["candidates"]) * 3 + report["baseline"]["n_samples"] * 3
    assert len(frame) == n_rows
    html = (run.path / "report.html").read_text()
    assert html.count("<svg") == 2 and "http" not in html.replace("http://www.w3.org/2000/svg", "")  # Δ chart each
    assert html.index(f"Gate passed: {BETTER.id}") < html.index("<table")  # the verdict comes first
    assert "SIMULATOR" in html and "What changed: baseline" in html and "<b>Fixed</b>" in html
    verify_run(run)
    # unchanged inputs: the stage is reused; forced: recomputed from the call cache and byte-identical; the only
    # calls paid again are speculative ones of the batch after the early stop (at most that batch's calls)
    before = sim.stats()["requests"]
    again = json.loads(cli("--root", str(root), "--json", "--concurrency", "16", "--candidates", "all").stdout)
    assert again["reused"] and again["report"] == report
    report_bytes = (run.path / "report.json").read_bytes()
    forced = json.loads(cli("--root", str(root), "--json", "--concurrency", "16", "--force", "--candidates",
                            "all").stdout)
    assert forced["spent"]["calls"] <= 16 * 3 * 4 and forced["spent"]["cache_hits"] > 300
    assert sim.stats()["requests"] - before <= forced["spent"]["calls"]  # a call cancelled unsent is booked too
    assert (run.path / "report.json").read_bytes() == report_bytes


def write_update(root, best):
    """What `update` leaves for evaluate: the candidate files and update.json naming its pick (or null)."""
    run = Workspace(root).open_run("support")
    with run.stage("update", params={"ids": [c.id for c in (BETTER, SAME, LONG)], "best": best},
                   inputs=["checkpoint.json", "dataset.parquet"], force=True) as st:
        for c in (BETTER, SAME, LONG):
            st.write_json(f"candidates/{c.id}.json", {"schema": "selfimprove.candidate/1", **c.model_dump(mode="json")})
        st.write_json("update.json", {"schema": "selfimprove.update/1", "best": best})
    return run


def test_default_evaluates_only_the_updates_best_so_the_gate_compares_one(root, sim):
    from selfimprove.stages.evaluate import evaluate
    from selfimprove.stages.promote import promote

    run = write_update(root, SAME.id)  # update's pick on validation, even if another candidate would do better
    res = cli("--root", str(root), "--json", "--concurrency", "16")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["report"]
    assert [c["id"] for c in report["candidates"]] == [SAME.id]  # BETTER is not replayed at all
    assert set(pd.read_parquet(run.path / "results.parquet")["policy"]) == {"baseline", SAME.id}
    # the library twin has the same default
    assert evaluate(root=root, yes=True, concurrency=16).report.document()["candidates"] == report["candidates"]
    write_update(root, BETTER.id)
    report = json.loads(cli("--root", str(root), "--json", "--concurrency", "16").stdout)["report"]
    assert [c["id"] for c in report["candidates"]] == [BETTER.id] and report["best"] == BETTER.id
    # the gate's K is the number of candidates evaluated: one, so the sign test runs at the full alpha
    dry = promote(root=root, dry_run=True)
    assert dry.candidate == BETTER.id and dry.decision.passed and dry.decision.settings.comparisons == 1


def test_train_split_evidence_never_replaces_the_held_out_report_and_cannot_promote(tmp_path, sim, monkeypatch):
    from selfimprove.stages.promote import promote

    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    root = tmp_path / "ws"
    build_run(root, sim.base_url, n=24, test_every=2, candidates=[BETTER, SAME], max_calls=5000)
    run = write_update(root, BETTER.id)
    held_out = json.loads(cli("--root", str(root), "--json", "--concurrency", "16").stdout)["report"]
    held_bytes = (run.path / "report.json").read_bytes()
    res = cli("--root", str(root), "--json", "--concurrency", "16", "--split", "train", "--n", "12")
    assert res.exit_code == 0, res.output
    train = json.loads(res.stdout)
    assert train["report"]["split"] == "train" and train["report"]["n_samples"] <= 12
    assert train["artifacts"] == ["results.train.parquet", "report.train.json", "report.train.html"]
    assert json.loads((run.path / "report.train.json").read_text())["split"] == "train"
    assert (run.path / "report.json").read_bytes() == held_bytes  # the held-out evidence is untouched
    stages = [s["stage"] for s in run.manifest()["stages"]]
    assert stages[-2:] == ["evaluate", "evaluate.train"]  # its own record: the held-out one is still there
    verify_run(run)
    dry = promote(root=root, dry_run=True)  # promote reads only the held-out report, and says so
    assert dry.split == "test" and dry.n_samples == held_out["n_samples"] and dry.candidate == BETTER.id
    assert held_out["candidates"][0]["candidate_digest"].startswith("sha256:")


def test_a_promoted_run_is_sealed_and_a_fork_re_evaluates_it_from_the_copied_call_cache(root, sim):
    from selfimprove.stages.promote import promote
    from selfimprove.store.verify import verify_target

    run = write_update(root, BETTER.id)
    assert cli("--root", str(root), "--json", "--concurrency", "16").exit_code == 0
    assert promote(root=root).build == "v0002"
    sealed = (run.path / "report.json").read_bytes()
    refused = cli("--root", str(root), "--json", "--force")
    assert refused.exit_code == 2 and "v0002" in json.loads(refused.stdout)["error"]
    before = sim.stats()["requests"]
    res = cli("--root", str(root), "--json", "--concurrency", "16", "--force", "--fork")
    assert res.exit_code == 0, res.output
    forked = json.loads(res.stdout)
    assert forked["run"] != run.run_id and forked["report"]["best"] == BETTER.id
    assert forked["spent"]["cache_hits"] > 0 and forked["spent"]["calls"] <= 16 * 3 * 2  # only speculative calls
    assert sim.stats()["requests"] - before <= forked["spent"]["calls"]
    fork = Workspace(root).open_run("support", forked["run"])
    assert fork.manifest()["forked_from"]["run"] == run.run_id
    assert (run.path / "report.json").read_bytes() == sealed
    verify_target(Workspace(root), "support")


def test_update_without_a_best_candidate_is_not_earned(root, sim):
    write_update(root, None)
    res = cli("--root", str(root), "--json")
    assert res.exit_code == 3 and "none better than the current policy" in " ".join(res.output.split())
    assert "--candidates all" in " ".join(res.output.split()) and sim.stats()["requests"] == 0


def test_a_label_only_eval_is_replayed_and_reported_by_label_agreement_only(root, sim):
    run = Workspace(root).open_run("support")
    ckpt = json.loads((run.path / "checkpoint.json").read_text())
    tone = next(e for e in ckpt["evals"] if e["name"] == "tone")
    ckpt["evals"].append({**tone, "name": "tone_labels", "choices": None, "labels": list(tone["choices"])})
    dataset = pd.read_parquet(run.path / "dataset.parquet")
    with run.stage("snapshot", params={"label_only": True}, force=True) as st:
        st.write_table("dataset.parquet", dataset)
        st.write_json("checkpoint.json", ckpt)
    res = cli("--root", str(root), "--json", "--candidates", BETTER.id, "--concurrency", "16")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    report = out["report"]
    assert any("'tone_labels' has labels but no scores" in w for w in out["warnings"])
    assert report["label_only_evals"] == ["tone_labels"] and "tone_labels" not in report["evals"]
    (entry,) = report["candidates"]
    assert set(entry["evals"]) == {"policy_compliance", "tone", "style"}  # no statistics, no gate for it
    agreement = entry["label_agreement"]["tone_labels"]
    frame = pd.read_parquet(run.path / "results.parquet")
    labels = frame[frame["eval"] == "tone_labels"]
    assert labels["score"].isna().all() and labels["error"].isna().all() and labels["label"].notna().all()
    # the same judge request as the scored tone eval: the same labels, so agreement can be checked against tone
    tone_rows = frame[frame["eval"] == "tone"].set_index(["policy", "sample_id"])["label"]
    assert (labels.set_index(["policy", "sample_id"])["label"] == tone_rows).all()
    by_sample = labels.pivot(index="sample_id", columns="policy", values="label").dropna()
    assert agreement["n"] == len(by_sample) == entry["n_samples"]
    assert agreement["agree"] == int((by_sample["baseline"] == by_sample[BETTER.id]).sum())
    assert agreement["baseline"] == by_sample["baseline"].value_counts().reindex(
        list(agreement["baseline"]), fill_value=0).to_dict()
    # a label-only eval cannot be the primary: no gain to measure
    res = cli("--root", str(root), "--json", "--candidates", BETTER.id, "--set", "evals.primary=tone_labels")
    assert res.exit_code == 2 and "labels but no scores" in " ".join(res.output.split())


def test_stored_baseline_named_candidate_and_discriminative_focus(root, sim):
    res = cli("--root", str(root), "--json", "--baseline", "stored", "--candidates", LONG.id)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["report"]["baseline"]["mode"] == "stored" and any("stored" in w for w in out["warnings"])
    (entry,) = out["report"]["candidates"]
    assert entry["id"] == LONG.id and entry["passed_guards"] is False and out["report"]["best"] is None
    assert "gpt" not in json.dumps(sim.stats()["by_model"]) and "sim-small" in sim.stats()["by_model"]
    # a stored baseline replays only the candidate: one task call per sample, no baseline task calls
    assert sim.stats()["by_model"]["sim-small"]["200"] == entry["n_samples"]
    res = cli("--root", str(root), "--json", "--focus", "discriminative", "--candidates", BETTER.id)
    out = json.loads(res.stdout)
    note = next(w for w in out["warnings"] if w.startswith("focus:"))
    assert "discriminative samples of 50" in note
    assert out["report"]["tags"]["before"]["discriminative"] > 0


def test_budget_estimate_refuses_without_yes_and_stops_with_it(root, sim):
    res = cli("--root", str(root), "--json", "--set", "evaluate.max_calls=50", "--candidates", "all")
    assert res.exit_code == 2 and "exceeds the budget" in res.output and sim.stats()["requests"] == 0
    res = cli("--root", str(root), "--json", "--set", "evaluate.max_calls=200", "--yes", "--concurrency", "8",
              "--candidates", "all")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["report"]["stopped"] == "budget" and any("stopped early" in w for w in out["warnings"])
    assert out["spent"]["calls"] <= 200 and sim.stats()["requests"] <= 200


def test_faults_every_row_finishes_or_fails_and_totals_reconcile(root, sim):
    sim.configure(error_rate=0.05, throttle_rate=0.05, retry_after_s=0.01, seed=7)
    # one batch of all 50 samples: no speculative next batch to cancel, so the books must match exactly
    res = cli("--root", str(root), "--json", "--concurrency", "50", "--set", "llm.task.max_retries=2",
              "--candidates", "all")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    stats = sim.stats()
    assert out["spent"]["calls"] == stats["requests"]  # every attempt booked once, retries included
    assert out["spent"]["calls"] - out["spent"]["failed"] == stats["by_status"]["200"]
    assert stats["by_status"].get("500", 0) > 0 and stats["by_status"].get("429", 0) > 0
    run = Workspace(root).open_run("support")
    frame = pd.read_parquet(run.path / "results.parquet")
    report = out["report"]
    expected = (report["baseline"]["n_samples"] + sum(c["n_samples"] for c in report["candidates"])) * 3
    assert len(frame) == expected  # every (sample, policy, eval) has a row: a verdict or an error
    assert (frame["score"].notna() ^ frame["error"].notna()).all()
    cands = frame[frame["policy"] != "baseline"]
    gen_failed = cands[cands["gen_error"].notna()].drop_duplicates(["policy", "sample_id"])
    judge_failed = cands[cands["error"].notna() & cands["gen_error"].isna()]
    assert sum(c["errors"]["generation"] for c in report["candidates"]) == len(gen_failed)
    assert sum(c["errors"]["judgement"] for c in report["candidates"]) == len(judge_failed)


def test_killed_midway_rerun_finishes_without_paying_twice(root, sim):
    sim.configure(latency_ms=40)
    env = dict(os.environ, SELFIMPROVE_NO_PROGRESS="1")
    cmd = [sys.executable, "-c", "from selfimprove.cli.app import main; main()", "evaluate", "--root", str(root), "--concurrency", "4",
           "--set", "evaluate.min_effect=0.01", "--candidates", SAME.id]  # min_effect 0.01: no early stop
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while sim.stats()["requests"] < 60 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    paid_before = sim.stats()["by_status"]["200"]
    res = cli("--root", str(root), "--json", "--concurrency", "4", "--set", "evaluate.min_effect=0.01",
              "--candidates", SAME.id)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["report"]["candidates"][0]["n_samples"] == 50  # finished
    assert out["spent"]["cache_hits"] >= paid_before - 4
    run = Workspace(root).open_run("support")
    cached = len(list((run.path / "cache" / "llm").glob("??/*.json")))
    # every request paid for more than once was in flight at the kill (at most `concurrency` of them)
    assert 0 <= sim.stats()["by_status"]["200"] - cached <= 4


def test_people_are_not_replayed_and_the_report_shows_their_agreement_with_the_judge(root, sim):
    from selfimprove.core.agreement import agreement
    from selfimprove.core.records import EvalResult
    from selfimprove.dataset.table import read_samples, samples_to_frame

    run = Workspace(root).open_run("support")
    ckpt = json.loads((run.path / "checkpoint.json").read_text())
    tone = next(e for e in ckpt["evals"] if e["name"] == "tone")
    ckpt["evals"].append({**tone, "name": "human.tone", "kind": "human", "template": None})
    reviewed, samples, pairs = 0, [], []
    for s in read_samples(run.path / "dataset.parquet"):
        judge = s.evals.get("tone")
        if judge is not None and reviewed < 20:  # 20 reviews; every fifth one disagrees with the judge
            label = judge.label if reviewed % 5 else next(k for k in tone["choices"] if k != judge.label)
            s = s.model_copy(update={"evals": {**s.evals, "human.tone": EvalResult(
                label=label, score=tone["choices"][label], annotator_kind="HUMAN")}})
            reviewed += 1
            pairs.append((label, judge.label))
        samples.append(s)
    with run.stage("snapshot", params={"people": True}, force=True) as st:
        st.write_table("dataset.parquet", samples_to_frame(samples))
        st.write_json("checkpoint.json", ckpt)
    res = cli("--root", str(root), "--json", "--candidates", BETTER.id, "--concurrency", "16")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["report"]
    [a] = report["human_agreement"]
    assert (a["judge"], a["human"], a["n"], a["agree"]) == ("tone", "human.tone", 20, 16)
    assert a["kappa"] == agreement(pairs).kappa and a["percent"] == 0.8
    [stored] = report["stored_only"]
    assert stored["name"] == "human.tone" and "people's labels cannot be replayed" in stored["why"]
    assert stored["n"] == 20 and "human.tone" not in report["evals"]
    assert all("human.tone" not in c["evals"] for c in report["candidates"])  # never in the gate


def test_the_library_works_inside_a_running_event_loop(root):
    """A notebook cell runs inside an event loop, where asyncio.run refuses; the library function still works."""
    import asyncio

    from selfimprove.stages.evaluate import evaluate

    async def notebook_cell():
        asyncio.get_running_loop()  # as in Jupyter: a loop is running in this thread
        return evaluate(root=root, candidates="all", concurrency=16)

    result = asyncio.run(notebook_cell())
    assert result.report.best == BETTER.id and not result.reused
