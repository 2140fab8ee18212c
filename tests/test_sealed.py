"""Sealed runs: a run a build was promoted from refuses stage re-runs (naming the build) and writes nothing; `--fork`
re-runs in a new run that names its origin; an unsealed re-run keeps what it replaces under `superseded`."""

import json

import pandas as pd
import pytest
from fixtures.promoted import promoted_workspace
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.store.runs import Workspace
from selfimprove.store.seal import SealedRun, fork_run, stage_run
from selfimprove.store.verify import verify_run, verify_target

runner = CliRunner()


def tree(root):
    """Every file's bytes, except the target lock file."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.fixture
def ws(tmp_path):
    run, cid = promoted_workspace(tmp_path)
    return tmp_path, run, cid


@pytest.mark.parametrize("args", [
    ["snapshot", "--force"],            # forced re-run
    ["snapshot", "--seed", "7"],        # another key
    ["update", "--yes", "--trials", "2"],  # a plain update after the run that promoted (the latest run)
])
def test_a_stage_rerun_in_a_sealed_run_refuses_naming_the_build_and_writes_nothing(ws, args):
    root, run, _ = ws
    before = tree(root)
    res = runner.invoke(app, [*args, "--root", str(root), "--json"])
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)
    assert "sealed" in doc["error"] and "v0002" in doc["error"] and run.run_id in doc["error"]
    assert "--fork" in doc["hint"]
    assert tree(root) == before
    verify_target(Workspace(root), "support")


def test_the_same_key_is_still_reused_in_a_sealed_run_and_changes_nothing(ws):
    root, run, _cid = ws
    before = tree(root)
    with run.stage("update", params={"trials": 1}, inputs=["checkpoint.json", "dataset.parquet"]) as st:
        assert st.reused
    assert {p: b for p, b in tree(root).items() if p.name != "meta.json"} == \
        {p: b for p, b in before.items() if p.name != "meta.json"}
    with pytest.raises(SealedRun, match="v0002"):
        run.stage("update", params={"trials": 1}, inputs=["checkpoint.json", "dataset.parquet"], force=True)


def test_a_damaged_output_of_a_sealed_stage_is_an_integrity_failure_not_a_rerun(ws):
    _, run, _ = ws
    from selfimprove.core.errors import IntegrityError

    (run.path / "update.json").write_text("{}")
    with pytest.raises(IntegrityError, match="update.json"):
        run.stage("update", params={"trials": 1}, inputs=["checkpoint.json", "dataset.parquet"])


def test_a_new_stage_may_be_added_to_a_sealed_run_without_unbinding_the_build(ws):
    root, run, _ = ws
    with run.stage("evaluate.train", params={"split": "train"}, inputs=["dataset.parquet"]) as st:
        st.write_json("report.train.json", {"split": "train"})
    assert [s["stage"] for s in run.manifest()["stages"]][-2:] == ["promote", "evaluate.train"]
    verify_target(Workspace(root), "support")


def test_fork_starts_a_new_run_from_the_sealed_runs_inputs_and_names_its_origin(ws):
    root, run, cid = ws
    ws_ = Workspace(root)
    origin_digest = run.manifest()["digest"]
    before = tree(run.path)
    with stage_run(ws_, "support", run.run_id, "update", fork=True) as forked:
        assert forked.run_id != run.run_id
        assert [s["stage"] for s in forked.manifest()["stages"]] == ["pull", "snapshot"]
        with forked.stage("update", params={"trials": 2}, inputs=["checkpoint.json", "dataset.parquet"]) as st:
            st.write_json(f"candidates/{cid}.json", {"changed": True})  # same path as the origin's: hard links
            st.write_json("update.json", {"best": None})               # must not carry the write back
    manifest = forked.manifest()
    assert manifest["forked_from"] == {"run": run.run_id, "manifest_digest": origin_digest}
    assert manifest["parent_build"] == run.manifest()["parent_build"]
    assert tree(run.path) == before  # the origin is untouched
    summary = verify_target(ws_, "support")
    assert len(summary["runs"]) == 2
    log = json.loads(runner.invoke(app, ["log", "--root", str(root), "--json"]).stdout)
    assert {r["run"]: r.get("forked_from") for r in log["runs"]}[forked.run_id] == run.run_id


def test_a_fork_whose_stage_fails_leaves_nothing_behind(ws):
    root, run, _ = ws
    res = runner.invoke(app, ["snapshot", "--root", str(root), "--run", run.run_id, "--fork", "--json"])
    assert res.exit_code != 0  # the fixture's raw spans hold no usable sample
    assert [r.run_id for r in Workspace(root).runs("support")] == [run.run_id]


def test_forking_damaged_evidence_is_refused(ws):
    root, run, _ = ws
    (run.path / "checkpoint.json").write_text("{}")
    from selfimprove.core.errors import IntegrityError

    with pytest.raises(IntegrityError, match="checkpoint.json"):
        fork_run(run, "update")
    assert len(Workspace(root).runs("support")) == 1


def test_an_unsealed_rerun_keeps_what_it_replaces_under_superseded(tmp_path):
    from fixtures.promoted import build_stages

    ws_ = Workspace(tmp_path)
    run, _ = build_stages(ws_)
    with run.stage("pull", params={"since": "2026-11-02"}) as st:  # evaluate's inputs do not depend on pull...
        st.write_table("raw/spans.parquet", pd.DataFrame({"span_id": ["x"], "n": [9]}))
    manifest = run.manifest()
    # ...but snapshot consumed pull's output, update snapshot's, evaluate update's: all superseded, none lost
    assert [s["stage"] for s in manifest["stages"]] == ["pull"]
    kept = manifest["superseded"]
    assert [s["stage"] for s in kept] == ["pull", "snapshot", "update", "evaluate"]
    assert kept[0]["reason"] == "re-run" and "consumed outputs of re-run 'pull'" in kept[1]["reason"]
    assert all((run.path / s["record"]).is_file() for s in kept)
    verify_run(run)


def test_an_unsealed_rerun_drops_only_the_stages_that_depend_on_it(tmp_path):
    from fixtures.promoted import build_stages

    ws_ = Workspace(tmp_path)
    run, _ = build_stages(ws_)
    with run.stage("evaluate.train", params={"split": "train"}, inputs=["dataset.parquet"]) as st:
        st.write_json("report.train.json", {"split": "train"})
    with run.stage("evaluate.train", params={"split": "train", "n": 3}, inputs=["dataset.parquet"]) as st:
        st.write_json("report.train.json", {"split": "train", "n": 3})
    stages = [s["stage"] for s in run.manifest()["stages"]]
    assert stages == ["pull", "snapshot", "update", "evaluate", "evaluate.train"]  # evaluate did not depend on it
    assert [s["stage"] for s in run.manifest()["superseded"]] == ["evaluate.train"]
    verify_run(run)
