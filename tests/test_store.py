import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from selfimprove.core.errors import IntegrityError, LockHeld, UsageError
from selfimprove.core.records import Build, Policy
from selfimprove.store.builds import move_ref, production, verify_builds, write_build
from selfimprove.store.runs import Workspace
from selfimprove.store.tables import table_digest
from selfimprove.store.verify import verify_run


def make_run(ws, target="support", parent_build=None):
    run = ws.new_run(target, parent_build=parent_build)
    with run.stage("pull", params={"since": "2024-05-01"}) as st:
        st.write_table("raw/spans.parquet", pd.DataFrame({"span_id": ["a", "b"], "n": [1, 2]}))
    with run.stage("snapshot", params={"seed": 0}, inputs=["raw/spans.parquet"]) as st:
        st.write_json("checkpoint.json", {"samples": 2})
        st.write_table("dataset.parquet", pd.DataFrame({"sample_id": ["a", "b"], "split": ["train", "test"]}))
    return run


def test_stage_records_and_manifest(tmp_path):
    run = make_run(Workspace(tmp_path))
    manifest = run.manifest()
    assert [s["stage"] for s in manifest["stages"]] == ["pull", "snapshot"]
    record = run.record("snapshot")
    assert [o["path"] for o in record["outputs"]] == ["checkpoint.json", "dataset.parquet"]  # sorted by path
    assert record["inputs"][0]["path"] == "raw/spans.parquet" and record["inputs"][0]["rows"] == 2
    assert record["inputs"][0]["digest"] == run.record("pull")["outputs"][0]["digest"]
    meta = json.loads((run.path / "meta.json").read_text())
    assert "duration_s" in meta["stages"]["pull"]  # volatile facts live outside the records
    assert "duration_s" not in json.dumps(manifest)
    assert verify_run(run)["files"] == 3


def test_same_key_is_reused_and_force_recomputes(tmp_path):
    ws = Workspace(tmp_path)
    run = make_run(ws)
    again = run.stage("snapshot", params={"seed": 0}, inputs=["raw/spans.parquet"])
    assert again.reused
    assert run.stage("snapshot", params={"seed": 1}, inputs=["raw/spans.parquet"]).reused is False
    assert run.stage("snapshot", params={"seed": 0}, inputs=["raw/spans.parquet"], force=True).reused is False


def test_reuse_across_runs_copies_outputs(tmp_path):
    ws = Workspace(tmp_path)
    make_run(ws)
    other = ws.new_run("support")
    with other.stage("pull", params={"since": "2024-05-01"}) as st:
        assert st.reused
    assert table_digest(other.path / "raw/spans.parquet")[1] == 2
    assert verify_run(other)["stages"] == 1


def test_rerunning_a_stage_drops_later_stages(tmp_path):
    run = make_run(Workspace(tmp_path))
    with run.stage("pull", params={"since": "2024-06-01"}) as st:
        st.write_table("raw/spans.parquet", pd.DataFrame({"span_id": ["c"], "n": [3]}))
    assert [s["stage"] for s in run.manifest()["stages"]] == ["pull"]


@pytest.mark.parametrize("victim", ["raw/spans.parquet", "dataset.parquet", "checkpoint.json",
                                    "stages/pull.json", "manifest.json"])
def test_verify_catches_a_one_byte_change_anywhere(tmp_path, victim):
    run = make_run(Workspace(tmp_path))
    path = run.path / victim
    if victim.endswith(".parquet"):
        pd.DataFrame({"span_id": ["a", "b"], "n": [1, 3]}).to_parquet(path) if "spans" in victim else \
            pd.DataFrame({"sample_id": ["a", "b"], "split": ["train", "tesT"]}).to_parquet(path)
    else:
        data = path.read_bytes()
        i = data.index(b"s")  # flip one byte: a letter in a key or value
        path.write_bytes(data[:i] + b"z" + data[i + 1:])
    with pytest.raises(IntegrityError) as err:
        verify_run(run)
    assert err.value.path.endswith(victim)


def test_verify_catches_whitespace_edits_to_json(tmp_path):
    run = make_run(Workspace(tmp_path))
    path = run.path / "checkpoint.json"
    path.write_text(path.read_text().replace(": 2", ":  2"))
    with pytest.raises(IntegrityError, match="checkpoint.json was edited"):
        verify_run(run)


def test_verify_catches_a_truncated_table(tmp_path):
    run = make_run(Workspace(tmp_path))
    path = run.path / "dataset.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match="dataset.parquet"):
        verify_run(run)


def _build(version, parent=None):
    policy = Policy(system_prompt=f"prompt {version}", model="sim-small")
    return Build(target="support", version=version, policy=policy, policy_digest=policy.digest,
                 parent=parent.name if parent else None, parent_digest=parent.digest if parent else None)


def test_builds_chain_and_broken_parent_link(tmp_path):
    ws = Workspace(tmp_path)
    v1 = _build(1)
    write_build(ws.prompts_dir, v1)
    v2 = _build(2, v1)
    write_build(ws.prompts_dir, v2)
    move_ref(ws.prompts_dir, v2)
    assert production(ws.prompts_dir, "support").name == "v0002"
    assert [b.name for b in verify_builds(ws.prompts_dir, "support")] == ["v0001", "v0002"]
    with pytest.raises(UsageError):
        write_build(ws.prompts_dir, v2)  # never rewritten
    run = make_run(ws, parent_build={"name": "v0002", "digest": v2.digest})
    verify_run(run)
    (ws.prompts_dir / "support" / "v0001.json").unlink()
    with pytest.raises(IntegrityError, match="missing parent v0001"):
        verify_builds(ws.prompts_dir, "support")
    (ws.prompts_dir / "support" / "v0002.json").unlink()
    with pytest.raises(IntegrityError, match="parent build v0002"):
        verify_run(run)


def test_target_lock_between_two_processes(tmp_path):
    ws = Workspace(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from selfimprove.store.runs import Workspace
        with Workspace({str(tmp_path)!r}).lock("support"):
            print("locked", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match=r"target 'support' is locked by pid \d+") as err, ws.lock("support"):
            pass
        assert "--wait" in err.value.hint
        with ws.lock("other"):  # other targets are independent
            pass
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=20)
    with ws.lock("support", wait=True):  # free again once the holder is gone
        pass


def test_run_ids_sort_in_creation_order_within_one_second(tmp_path):
    ws = Workspace(tmp_path)
    runs = [ws.new_run("support") for _ in range(20)]
    assert [r.run_id for r in ws.runs("support")] == [r.run_id for r in runs]
    assert ws.open_run("support").run_id == runs[-1].run_id
