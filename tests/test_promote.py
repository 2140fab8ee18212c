"""`promote`: gate → builds → production ref, refusals move nothing, dry run, rollback, idempotence.

Runs are made with the real store (stage records, digests) holding checkpoint.json, candidates/ and report.json in
the contract's shapes; the end-to-end loop against Phoenix and the simulator is in test_loop.py.
"""

import json

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.canonical import short
from selfimprove.core.errors import GateFailed, IntegrityError, UsageError
from selfimprove.core.records import Candidate, Checkpoint, EvalSpec, Policy
from selfimprove.core.report import Report, report_filename
from selfimprove.stages.promote import promote
from selfimprove.store.builds import build_name, list_builds, production, verify_builds
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run

runner = CliRunner()
CONFIG = """target = "support"
[evals]
primary = "policy"
[gate]
min_improvement = 0.05
"""


def ev(diff, ci, n=60):
    """An eval entry as evaluate writes it (normalised scores); the decision test's p is small exactly when the
    CI excludes 0 upward, the p of a drop exactly when it excludes 0 downward."""
    wins, losses = 1 + max(0, round(diff * n)), 1 + max(0, round(-diff * n))
    return {"scale": "normalized", "direction": "maximize", "baseline_mean": 0.5, "candidate_mean": 0.5 + diff,
            "diff": diff, "ci": list(ci), "n": n, "clusters": n, "n_dropped": 0, "wins": wins,
            "ties": n - wins - losses, "losses": losses, "p_regression": 0.001 if ci[1] < 0 else 0.4,
            "test": {"test": "SPRT", "level": 0.05, "beta": 0.05, "min_effect": 0.15, "llr": 0.0,
                     "p_value": 0.001 if ci[0] > 0 else 0.4, "estimate": diff, "estimate_corrected": diff,
                     "stop": "efficacy" if ci[0] > 0 else "exhausted",
                     "decision": "accept_h1" if ci[0] > 0 else "continue", "n_used": n // 2, "n_available": n,
                     "clusters_used": n // 2, "clusters_available": n, "reason": f"decided at n = {n // 2} of {n}"}}


def make_run(root, *, base="You are a support agent.", cand="You are a support agent. Cite the order id.",
             evals=None, guards=True, best=True, target="support", parent_build=None, split="test",
             policy_fields=None):
    """A run with snapshot → update → evaluate artifacts in the contract's shapes; returns (run, candidate id)."""
    (root / "configs").mkdir(exist_ok=True)
    cfg = root / "configs" / f"{target}.toml"
    if not cfg.exists():
        cfg.write_text(CONFIG.replace('"support"', f'"{target}"'))
    ws = Workspace(root)
    run = ws.new_run(target, parent_build=parent_build)
    bpol = Policy(system_prompt=base, model="sim-small", temperature=0.2, **(policy_fields or {}))
    cpol = Policy(system_prompt=cand, model="sim-small", temperature=0.2, **(policy_fields or {}))
    ck = Checkpoint(target=target, policy=bpol, evals=(EvalSpec(name="policy"), EvalSpec(name="tone")),
                    primary_eval="policy", train_ids=("a",), test_ids=("b",), counts={"samples": 2})
    cid = "c-" + short(cpol.digest)
    from selfimprove.core.records import GuardResult

    c = Candidate(id=cid, policy=cpol, parent=bpol.digest, rationale="cite ids",
                  guards=(GuardResult(name="not_empty", passed=guards, reason="" if guards else "empty"),))
    with run.stage("snapshot", params={}) as st:
        st.write_json("checkpoint.json", {"schema": "selfimprove.checkpoint/1", **ck.model_dump(mode="json")})
    with run.stage("update", params={}, inputs=["checkpoint.json"]) as st:
        st.write_json(f"candidates/{cid}.json", {"schema": "selfimprove.candidate/1", **c.model_dump(mode="json")})
        st.write_text(f"candidates/{cid}.diff", "-a\n+b\n")
    report = make_report(run, cid, cpol.digest, bpol.digest, evals=evals, guards=guards, best=best, split=split)
    stage = "evaluate" if split == "test" else f"evaluate.{split}"
    with run.stage(stage, params={}, inputs=["checkpoint.json", f"candidates/{cid}.json"]) as st:
        st.write_json(report_filename(split), report.document())
    return run, cid


def make_report(run, cid, policy_digest, baseline_digest, *, evals=None, guards=True, best=True, split="test"):
    """A report document in the contract's shape for one candidate of `run` (its file digest included)."""
    from selfimprove.store.artifacts import file_digest

    entry = {"id": cid, "policy_digest": policy_digest,
             "candidate_digest": file_digest(run.path / f"candidates/{cid}.json")[0], "passed_guards": guards,
             "pareto": True, "n_samples": 60,
             "evals": evals or {"policy": ev(0.2, (0.1, 0.3)), "tone": ev(0.0, (-0.05, 0.05))},
             "cost": {"per_call_usd": 0.0001, "baseline_per_call_usd": 0.0001, "tokens_per_call": 100,
                      "latency_ms_p50": 5.0}, "errors": {"generation": 0, "judgement": 0}}
    return Report.model_validate({
        "schema": "selfimprove.report/2", "target": run.target, "run": run.run_id, "split": split, "n_samples": 60,
        "inputs": {"dataset": "sha256:" + "0" * 64, "checkpoint": file_digest(run.path / "checkpoint.json")[0]},
        "primary_eval": "policy", "baseline": {"policy_digest": baseline_digest, "mode": "replay"},
        "judge_override": None, "candidates": [entry], "best": cid if best else None, "calls": 240,
        "cost_usd": 0.02, "settings": {"alpha": 0.05, "beta": 0.2, "min_effect": 0.05, "seed": 0}})


def snapshot_tree(root):
    """Every file's bytes, except the target lock file (created on first use)."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


def test_first_promotion_records_the_baseline_then_the_candidate(tmp_path):
    run, cid = make_run(tmp_path)
    res = promote(root=tmp_path, run=run.run_id)
    assert res.action == "promoted" and res.builds_written == ["v0001", "v0002"]
    assert res.build == "v0002" and res.production == "v0002" and res.previous is None
    ws = Workspace(tmp_path)
    v1, v2 = list_builds(ws.prompts_dir, "support")
    assert v1.policy.system_prompt == "You are a support agent." and v1.evidence["kind"] == "baseline"
    assert v1.parent is None and v1.run is None
    assert v2.parent == "v0001" and v2.parent_digest == v1.digest and v2.run == run.run_id
    assert v2.evidence["primary"]["eval"] == "policy" and v2.evidence["primary"]["diff"] == 0.2
    assert v2.evidence["primary"]["ci"] == [0.1, 0.3] and v2.evidence["id"] == cid
    assert v2.evidence["baseline_policy_digest"] == v1.policy_digest
    # the build names the manifest as it stood when the evidence was gated
    assert v2.run_manifest_digest != run.manifest()["digest"]
    assert [s["stage"] for s in run.manifest()["stages"]][-1] == "promote"
    promotion = json.loads((run.path / "promotion.json").read_text())
    assert promotion["build"] == "v0002" and promotion["decision"]["passed"] is True
    assert production(ws.prompts_dir, "support").name == "v0002"
    verify_run(run)
    verify_builds(ws.prompts_dir, "support")


def test_second_promotion_chains_on_production(tmp_path):
    run1, _ = make_run(tmp_path)
    promote(root=tmp_path, run=run1.run_id)
    run2, _ = make_run(tmp_path, base="You are a support agent. Cite the order id.",
                       cand="You are a support agent. Cite the order id. Be kind.")
    res = promote(root=tmp_path, run=run2.run_id)
    assert res.builds_written == ["v0003"] and res.previous == "v0002"
    v3 = list_builds(Workspace(tmp_path).prompts_dir, "support")[-1]
    assert v3.parent == "v0002"


def test_drifted_production_is_recorded_before_the_candidate(tmp_path):
    run1, _ = make_run(tmp_path)
    promote(root=tmp_path, run=run1.run_id)
    # production traffic ran a policy that is in no build (someone edited the prompt by hand)
    run2, _ = make_run(tmp_path, base="Hand-edited prompt.", cand="Hand-edited prompt. Cite the order id.")
    res = promote(root=tmp_path, run=run2.run_id)
    assert res.builds_written == ["v0003", "v0004"]
    v3, v4 = list_builds(Workspace(tmp_path).prompts_dir, "support")[2:]
    assert v3.evidence["kind"] == "baseline" and v3.parent == "v0002" and v4.parent == "v0003"


def test_refusal_raises_with_every_reason_and_moves_nothing(tmp_path):
    run, _ = make_run(tmp_path, evals={"policy": ev(0.03, (-0.02, 0.08)), "tone": ev(-0.2, (-0.3, -0.1))})
    before = snapshot_tree(tmp_path)
    with pytest.raises(GateFailed) as err:
        promote(root=tmp_path, run=run.run_id)
    assert len(err.value.reasons) == 3  # too small, the decision test not significant, tone regressed
    assert err.value.result.action == "refused"
    assert snapshot_tree(tmp_path) == before
    assert production(Workspace(tmp_path).prompts_dir, "support") is None


def test_guard_failure_and_min_improvement_flag(tmp_path):
    run, _ = make_run(tmp_path, guards=False)
    with pytest.raises(GateFailed, match="did not pass the gate") as err:
        promote(root=tmp_path, run=run.run_id)
    assert err.value.reasons == [f"candidate {err.value.result.candidate} did not pass its guard checks"]
    run2, _ = make_run(tmp_path, target="other")
    with pytest.raises(GateFailed):
        promote(root=tmp_path, target="other", run=run2.run_id, min_improvement=0.25)
    assert promote(root=tmp_path, target="other", run=run2.run_id, min_improvement=0.15).action == "promoted"


def test_no_best_candidate_is_refused_with_reasons(tmp_path):
    run, cid = make_run(tmp_path, best=False, evals={"policy": ev(0.0, (-0.1, 0.1))})
    with pytest.raises(GateFailed, match="names no best candidate") as err:
        promote(root=tmp_path, run=run.run_id)
    assert any(r.startswith(cid) for r in err.value.reasons)
    with pytest.raises(UsageError, match="not in the report"):
        promote(root=tmp_path, run=run.run_id, candidate="c-nope")


def test_dry_run_writes_nothing(tmp_path):
    run, _ = make_run(tmp_path)
    manifest = run.manifest()
    res = promote(root=tmp_path, run=run.run_id, dry_run=True)
    assert res.action == "dry-run" and res.decision.passed and res.builds_written == []
    assert not (tmp_path / "prompts").exists() and run.manifest() == manifest


def test_promoting_twice_is_idempotent(tmp_path):
    run, _ = make_run(tmp_path)
    promote(root=tmp_path, run=run.run_id)
    again = promote(root=tmp_path, run=run.run_id)
    assert again.action == "already promoted" and again.build == "v0002" and again.builds_written == []
    assert len(list_builds(Workspace(tmp_path).prompts_dir, "support")) == 2


def test_a_crash_after_the_build_does_not_duplicate_it(tmp_path):
    run, _ = make_run(tmp_path)
    promote(root=tmp_path, run=run.run_id)
    # simulate a crash before the stage record: the manifest as it stood before promote committed it
    from selfimprove.store.atomic import write_json
    from selfimprove.store.runs import manifest_digest

    manifest = run.manifest()
    manifest["stages"] = manifest["stages"][:-1]
    manifest["digest"] = manifest_digest(manifest)
    write_json(run.path / "manifest.json", manifest)
    for rel in ("stages/promote.json", "promotion.json"):
        (run.path / rel).unlink()
    assert [s["stage"] for s in run.manifest()["stages"]][-1] == "evaluate"
    res = promote(root=tmp_path, run=run.run_id)
    assert res.builds_written == [] and res.build == "v0002"
    assert len(list_builds(Workspace(tmp_path).prompts_dir, "support")) == 2


def test_evidence_from_another_split_is_refused_and_the_split_is_named(tmp_path):
    from selfimprove.core.canonical import pretty_json

    make_run(tmp_path)
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--dry-run", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["split"] == "test"
    assert json.loads(res.stdout)["n_samples"] == 60
    text = runner.invoke(app, ["promote", "--root", str(tmp_path), "--dry-run"])
    assert "'test' split (held out), 60 samples" in text.output
    # a report.json holding train evidence (as an older selfimprove wrote it with `evaluate --split train`)
    run2, cid2 = make_run(tmp_path, cand="Another prompt.")
    held = json.loads((run2.path / "report.json").read_text())
    train = make_report(run2, cid2, held["candidates"][0]["policy_digest"], held["baseline"]["policy_digest"],
                        split="train")
    with run2.stage("evaluate", params={"split": "train"}, inputs=["checkpoint.json"]) as st:
        st.write_text("report.json", pretty_json(train.document()))
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--run", run2.run_id, "--json"])
    assert res.exit_code == 3, res.output
    assert "'train' split, not the held-out 'test' split" in " ".join(res.output.split())
    assert not (tmp_path / "prompts").exists()


def test_a_report_from_an_older_selfimprove_is_a_usage_error_saying_to_evaluate_again(tmp_path):
    run, _ = make_run(tmp_path, cand="Yet another prompt.")
    old = {**json.loads((run.path / "report.json").read_text()), "schema": "selfimprove.report/1"}
    with run.stage("evaluate", params={"old": True}, inputs=["checkpoint.json"]) as st:
        st.write_json("report.json", old)
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--run", run.run_id, "--json"])
    assert res.exit_code == 2 and "older selfimprove" in json.loads(res.stdout)["error"]
    assert "evaluate --fork" in json.loads(res.stdout)["hint"]


def test_tampered_evidence_is_never_promoted(tmp_path):
    run, _ = make_run(tmp_path, evals={"policy": ev(0.0, (-0.1, 0.1))})
    path = run.path / "report.json"
    report = json.loads(path.read_text())
    report["candidates"][0]["evals"]["policy"] = ev(0.3, (0.2, 0.4))
    from selfimprove.core.canonical import pretty_json

    path.write_text(pretty_json(report))
    with pytest.raises(IntegrityError, match="report.json"):
        promote(root=tmp_path, run=run.run_id)
    assert not (tmp_path / "prompts").exists()


def test_rollback_moves_only_the_ref(tmp_path):
    run, _ = make_run(tmp_path)
    promote(root=tmp_path, run=run.run_id)
    ws = Workspace(tmp_path)
    files = {p: p.read_bytes() for p in (ws.prompts_dir / "support").glob("v*.json")}
    res = promote(root=tmp_path, to="v0001")
    assert res.action == "rollback" and res.previous == "v0002" and res.production == "v0001"
    assert production(ws.prompts_dir, "support").name == "v0001"
    assert {p: p.read_bytes() for p in files} == files  # no build rewritten
    log = [json.loads(line) for line in (ws.prompts_dir / "support" / "refs.jsonl").read_text().splitlines()]
    assert [e["build"] for e in log] == ["v0002", "v0001"]
    assert promote(root=tmp_path, to="2").production == "v0002"  # roll forward
    with pytest.raises(UsageError, match="no build v0009"):
        promote(root=tmp_path, to="v0009")


def test_build_name_parsing():
    assert build_name("v0002") == build_name("2") == build_name("0002") == "v0002"
    with pytest.raises(UsageError):
        build_name("latest")


def test_cli_exit_codes_and_json(tmp_path):
    make_run(tmp_path, evals={"policy": ev(0.01, (-0.1, 0.12))})
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--json"])
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.promote/1" and doc["action"] == "refused"
    assert doc["decision"]["passed"] is False and len(doc["decision"]["reasons"]) == 2
    assert "not significant" in res.stderr
    run2, _ = make_run(tmp_path)
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--run", run2.run_id, "--dry-run"])
    assert res.exit_code == 0 and "Dry run" in res.stderr
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--run", run2.run_id, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["production"] == "v0002"
    res = runner.invoke(app, ["promote", "--root", str(tmp_path), "--to", "v0001"])
    assert res.exit_code == 0 and "v0002 → v0001" in res.stderr
