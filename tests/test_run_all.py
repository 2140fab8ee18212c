"""`selfimprove run --all` / `--targets GLOB`: every target's loop under its own lock, one summary, a failed target
reported while the others run, and one provider concurrency cap for the whole process."""

from __future__ import annotations

import json

import pytest
from fixtures.span_rows import span_row, workspace, write_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.llm.throttle import cap_concurrency, limiter_for
from selfimprove.store.runs import Workspace

# a trigger no run reaches: each loop stops after pull and snapshot, with no LLM call
SKIP = "[trigger]\nmin_new_samples = 1000\n"


@pytest.fixture
def ws(tmp_path):
    rows = [span_row(i, evals={"correctness": ("correct", 1.0) if i % 2 else ("incorrect", 0.0)}) for i in range(12)]
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    root = workspace(tmp_path / "ws", spans, target="alpha", extra=SKIP)
    workspace(root, spans, target="beta", extra=SKIP)
    workspace(root, tmp_path / "missing.jsonl", target="gamma", extra=SKIP)  # its spans file does not exist
    (root / "configs" / "base.toml").write_text('target = "base"\n')  # extended by others, never run alone
    yield root
    cap_concurrency(256)  # the process-wide default, for the other tests


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", *args, "--json"])


def test_all_targets_run_and_one_failure_does_not_stop_the_others(ws):
    out = invoke("--all", "--root", str(ws), "--parallel", "2", "--provider-concurrency", "3")
    doc = json.loads(out.stdout)
    assert doc["schema"] == "selfimprove.run-all/1"
    by_target = {t["target"]: t for t in doc["targets"]}
    assert set(by_target) == {"alpha", "beta", "gamma"}  # base.toml is not a target
    for name in ("alpha", "beta"):
        assert by_target[name]["outcome"] == "skipped" and by_target[name]["exit_code"] == 0
        assert [s["stage"] for s in by_target[name]["result"]["steps"]] == ["pull", "snapshot", "trigger"]
        assert len(Workspace(ws).runs(name)) == 1
    gamma = by_target["gamma"]
    assert gamma["outcome"] == "error" and gamma["exit_code"] == 2 and "missing.jsonl" in gamma["error"]
    assert out.exit_code == doc["exit_code"] == 2  # the failed target's code
    assert doc["provider_concurrency"] == 3 and limiter_for("http://127.0.0.1:9/v1").ceiling == 3


def test_a_glob_picks_targets_and_a_target_held_elsewhere_fails_alone(ws):
    with Workspace(ws).lock("alpha"):  # another run of alpha (this thread) holds its lock
        out = invoke("--targets", "configs/[ab]*.toml", "--root", str(ws))
    doc = json.loads(out.stdout)
    by_target = {t["target"]: t for t in doc["targets"]}
    assert set(by_target) == {"alpha", "beta"}
    assert by_target["alpha"]["outcome"] == "error" and "lock" in by_target["alpha"]["error"].lower()
    assert by_target["beta"]["outcome"] == "skipped"
    assert out.exit_code == 1
    again = json.loads(invoke("--targets", "configs/b*.toml", "--root", str(ws)).stdout)
    assert [t["outcome"] for t in again["targets"]] == ["nothing new"] and again["exit_code"] == 0


def test_bad_selections_are_usage_errors(ws):
    out = invoke("--targets", "configs/nothing-*.toml", "--root", str(ws))
    assert out.exit_code == 2 and "no target config matches" in json.loads(out.stdout)["error"]
    out = invoke("--all", "--target", "alpha", "--root", str(ws))
    assert out.exit_code == 2
