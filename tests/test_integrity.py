"""Integrity: one damaged artifact of each kind → `verify` exits 4 naming it (never "Unexpected error"); the
product's readers refuse it the same way; `log` marks a damaged run or build instead of failing; refs bind to
builds by digest; an unknown target is a usage error.

To add a case: name the artifact in tests/fixtures/promoted.py's ARTIFACTS and, if it needs one, a damage below.
"""

import json

import pytest
from fixtures.promoted import ARTIFACTS, artifact_path, promoted_workspace
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import IntegrityError
from selfimprove.dataset.table import read_samples

runner = CliRunner()


def flip_byte(path, at=None):
    """Change one byte: the middle of the file, or the first byte of `at` when given."""
    data = bytearray(path.read_bytes())
    i = data.index(at) + 1 if at else len(data) // 2
    data[i] = ord("u") if data[i] != ord("u") else ord("v")
    path.write_bytes(bytes(data))


DAMAGES = {
    "flipped byte": flip_byte,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "missing": lambda p: p.unlink(),
}


def cli(*args):
    return runner.invoke(app, list(args))


@pytest.fixture
def ws(tmp_path):
    run, cid = promoted_workspace(tmp_path)
    return tmp_path, run, cid


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_one_damaged_artifact_of_each_kind_fails_verify_with_exit_4_naming_it(ws, kind, damage):
    root, run, cid = ws
    path = artifact_path(root, kind, run, cid)
    DAMAGES[damage](path)
    res = cli("verify", "--root", str(root), "--json")
    assert res.exit_code == 4, (kind, damage, res.output)
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 4 and path.name in doc["error"], doc
    assert "Unexpected error" not in res.output


def test_a_flipped_byte_in_the_embedded_pandas_metadata_is_caught_and_never_read_back(ws):
    root, run, cid = ws
    path = artifact_path(root, "dataset", run, cid)
    flip_byte(path, at=b'"name": "start_time"')  # the pandas metadata's copy of the column name, nothing else
    res = cli("verify", "--root", str(root), "--json")
    assert res.exit_code == 4 and "dataset.parquet" in json.loads(res.stdout)["error"]
    # what the product reads is what the table digest covers: the column name comes from the arrow schema
    samples = read_samples(path)
    assert samples[0].start_time == "2026-11-01T00:00:00Z"


@pytest.mark.parametrize("kind,command", [
    ("report", ["promote", "--dry-run"]),
    ("checkpoint", ["promote", "--dry-run"]),
    ("candidate", ["promote", "--dry-run"]),
    ("build", ["show"]),
    ("ref", ["show"]),
])
def test_commands_that_read_a_corrupt_artifact_exit_4_naming_it(ws, kind, command):
    root, run, cid = ws
    path = artifact_path(root, kind, run, cid)
    path.write_text("{ not json")
    res = cli(*command, "--root", str(root), "--json")
    assert res.exit_code == 4, (kind, res.output)
    assert path.name in json.loads(res.stdout)["error"]


def test_a_corrupt_dataset_stops_evaluate_with_exit_4(ws):
    root, run, cid = ws
    path = artifact_path(root, "dataset", run, cid)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError) as err:
        read_samples(path)
    assert err.value.path == str(path)


def test_log_marks_a_damaged_run_and_build_and_lists_the_rest(ws):
    root, run, _cid = ws
    from selfimprove.store.runs import Workspace

    other = Workspace(root).new_run("support")
    (run.path / "manifest.json").write_text('{"schema": "selfimprove.manifest/1", "stages": [')
    (root / "prompts/support/v0001.json").write_text("garbage")
    res = cli("log", "--root", str(root), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    runs = {r["run"]: r for r in doc["runs"]}
    assert "manifest.json" in runs[run.run_id]["error"] and "error" not in runs[other.run_id]
    builds = {b["name"]: b for b in doc["builds"]}
    assert "v0001.json" in builds["v0001"]["error"] and builds["v0002"]["production"]
    text = cli("log", "--root", str(root))
    assert text.exit_code == 0 and "DAMAGED" in text.output


def test_a_ref_edited_to_point_at_another_build_is_refused_by_verify_and_load_policy(ws):
    root, _run, _cid = ws
    from selfimprove.app.runtime import load_policy

    ref = root / "prompts/support/production.ref.json"
    data = json.loads(ref.read_text())
    ref.write_text(json.dumps({**data, "build": "v0001"}, indent=2, sort_keys=True) + "\n")
    res = cli("verify", "--root", str(root), "--json")
    assert res.exit_code == 4 and "production.ref.json" in json.loads(res.stdout)["error"]
    with pytest.raises(IntegrityError, match="production.ref.json"):
        load_policy("support", root=root)


def test_a_ref_moved_consistently_but_outside_the_log_is_caught(ws):
    root, _run, _cid = ws
    from selfimprove.store.builds import read_build

    v1 = read_build(root / "prompts/support/v0001.json")
    ref = root / "prompts/support/production.ref.json"
    ref.write_text(json.dumps({"build": "v0001", "digest": v1.digest}, indent=2, sort_keys=True) + "\n")
    res = cli("verify", "--root", str(root), "--json")
    assert res.exit_code == 4 and "ref log" in json.loads(res.stdout)["error"]
    # the documented way moves the ref and logs it: verify agrees
    assert cli("promote", "--root", str(root), "--to", "v0001").exit_code == 0
    assert cli("verify", "--root", str(root)).exit_code == 0


def test_a_build_whose_run_evidence_changed_fails_verify(ws):
    root, run, _cid = ws
    from selfimprove.store.atomic import write_json
    from selfimprove.store.runs import manifest_digest

    # rewrite the run consistently (every digest re-derived), as a stage re-run used to: the build no longer binds
    manifest = run.manifest()
    manifest["stages"] = [s for s in manifest["stages"] if s["stage"] not in ("evaluate", "promote")]
    manifest["digest"] = manifest_digest(manifest)
    write_json(run.path / "manifest.json", manifest)
    res = cli("verify", "--root", str(root), "--json")
    assert res.exit_code == 4 and "v0002" in json.loads(res.stdout)["error"]


def test_verify_of_an_unknown_target_is_a_usage_error(ws):
    root, _run, _cid = ws
    res = cli("verify", "--root", str(root), "--target", "nosuch", "--json")
    assert res.exit_code == 2 and "nosuch" in json.loads(res.stdout)["error"]
    ok = cli("verify", "--root", str(root), "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["builds"] == ["v0001", "v0002"]
