"""`promote`: gate a candidate on its evaluate evidence; a pass becomes a new build and moves `production`.

Contract:
- Reads the run's `report.json` (a selfimprove.core.report.Report), `checkpoint.json` and `candidates/<id>.json`,
  after `verify_run` (evidence that does not match its digests is never promoted: IntegrityError, exit 4).
- Only held-out evidence promotes: a report whose split is not "test" is refused (GateFailed, exit 3), and the
  result names the split and the number of samples the decision rests on.
- A refusal raises `GateFailed` with every reason (exit 3) and writes and moves nothing; `--dry-run` decides the
  same way but never writes.
- A pass writes `prompts/<target>/vNNNN.json` (policy, digest, parent build and its digest, the run, the run's
  manifest digest at promotion time, the evidence) and moves the `production` ref, then records a `promote`
  stage in the run (`promotion.json`: the decision, the builds written, the Phoenix version if pushed).
- The chain always holds the policy the evidence was measured against: the candidate's parent is the build whose
  policy is the run's baseline (the checkpoint's current policy). When no build has that policy — the first
  promotion of a target, or production drifted from the chain — that baseline is first recorded as a build of
  its own (`evidence.kind = "baseline"`), so the first promotion writes v0001 (baseline) and v0002 (candidate).
- Idempotent: promoting the same run again reuses its record; after a crash between the build and the record,
  the build of this run with the same policy is found and reused, never duplicated.
- `to=vNNNN` moves the ref to an existing build (rollback or roll-forward); no build is rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.core.canonical import digest
from selfimprove.core.errors import GateFailed, IntegrityError, UsageError
from selfimprove.core.gate import GateDecision, decide, primary_evidence, settings_for_report
from selfimprove.core.records import Build, Policy
from selfimprove.core.report import HELD_OUT_SPLIT, CandidateEntry, Report
from selfimprove.store import builds as store

PROMOTION_SCHEMA = "selfimprove.promotion/1"


class PromoteResult(BaseModel):
    target: str
    action: str  # "promoted" | "dry-run" | "rollback" | "already promoted" | "refused" (on GateFailed.result)
    run: str | None = None
    candidate: str | None = None
    split: str | None = None
    n_samples: int | None = None
    decision: GateDecision | None = None
    builds_written: list[str] = []
    build: str | None = None
    build_digest: str | None = None
    previous: str | None = None
    production: str | None = None
    primary: dict[str, Any] | None = None
    phoenix: dict[str, Any] | None = None


def promote(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
            run: str | None = None, candidate: str | None = None, min_improvement: float | None = None,
            dry_run: bool = False, push_phoenix: bool = False, to: str | None = None,
            wait: bool = False) -> PromoteResult:
    """Gate and promote (or roll back with `to`). See the module docstring for the contract."""
    from selfimprove.config.load import load_target
    from selfimprove.store.runs import Workspace

    cfg = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    with ws.lock(cfg.target, wait=wait):
        if to is not None:
            return _move_to(ws, cfg, to, dry_run=dry_run, push_phoenix=push_phoenix)
        return _promote_run(ws, cfg, ws.open_run(cfg.target, run), candidate, min_improvement,
                            dry_run=dry_run, push_phoenix=push_phoenix)


def _move_to(ws, cfg, spec: str, *, dry_run: bool, push_phoenix: bool) -> PromoteResult:
    build = store.read_named_build(ws.prompts_dir, cfg.target, store.build_name(spec))
    prev = store.production(ws.prompts_dir, cfg.target)
    result = PromoteResult(target=cfg.target, action="dry-run" if dry_run else "rollback", build=build.name,
                           build_digest=build.digest, previous=prev.name if prev else None,
                           production=(prev.name if prev else None) if dry_run else build.name,
                           primary=build.evidence.get("primary"))
    if dry_run:
        return result
    store.move_ref(ws.prompts_dir, build, reason=f"moved from {prev.name if prev else 'nothing'} by --to")
    if push_phoenix:
        result.phoenix = _push(cfg, build, note=f"--to from {prev.name if prev else 'nothing'}")
    return result


def _refuse_if_update_found_none(run) -> None:
    """No report because update found no candidate better than the current policy: not earned (exit 3), not a
    missing step (which would send the user to `evaluate`, whose own refusal sends them back here)."""
    from selfimprove.store.documents import read_json

    upd = run.path / "update.json"
    if (run.path / "report.json").is_file() or not upd.is_file() or read_json(upd, "update summary").get("best"):
        return
    raise GateFailed("nothing earned promotion: update found no candidate better than the current policy",
                     reasons=[f"run {run.run_id}: update.json names no best candidate"],
                     hint="production is unchanged; pull more traffic or update with more --trials, or test the "
                          "candidates anyway with `selfimprove evaluate --candidates all`")


def _load_json(run, rel: str, hint: str) -> dict[str, Any]:
    from selfimprove.store.documents import read_json

    path = run.path / rel
    if not path.is_file():
        raise UsageError(f"{path} not found", hint=hint)
    return read_json(path)


def _load_report(run, rel: str = "report.json") -> Report:
    """The run's held-out report (or an experiment's); refused (exit 3) when it holds evidence from another
    split."""
    from selfimprove.store.documents import read_json, read_model

    path = run.path / rel
    if not path.is_file() and run.record("evaluate") is None and rel == "report.json":
        raise UsageError(f"{path} not found", hint="run `selfimprove evaluate` first (on the held-out test split)")
    raw = read_json(path, "evaluation report")
    if isinstance(raw, dict) and raw.get("schema") == "selfimprove.report/1":
        raise UsageError(f"{path} was written by an older selfimprove (selfimprove.report/1: no split check, no "
                         "candidate digest)", hint="evaluate again: `selfimprove evaluate --fork` (or --force "
                                                   "in a run no build was promoted from)")
    report = read_model(path, Report, "evaluation report")
    if not report.held_out:
        why = "only held-out evidence can promote: the candidates were learned from the train split"
        raise GateFailed(f"{path} holds evidence from the '{report.split}' split, not the held-out "
                         f"'{HELD_OUT_SPLIT}' split", reasons=[why],
                         hint="run `selfimprove evaluate` (its default --split test), then promote")
    return report


def _promote_run(ws, cfg, run, candidate: str | None, min_improvement: float | None, *, dry_run: bool,
                 push_phoenix: bool) -> PromoteResult:
    from selfimprove.store.verify import verify_run

    experiment = _experiment_folder(run, candidate)
    if experiment is None:
        _refuse_if_update_found_none(run)
    verify_run(run)
    report_rel = f"{experiment}/report.json" if experiment else "report.json"
    report = _load_report(run, report_rel)
    checkpoint = _load_json(run, "checkpoint.json", "run `selfimprove snapshot` first")
    baseline_policy = _experiment_control(run, experiment) if experiment else checkpoint["policy"]
    primary = report.primary_eval
    settings = gate_settings(cfg, report, min_improvement)
    entry = _pick_candidate(report, candidate, settings)
    cand_rel = f"{experiment}/candidate.json" if experiment else f"candidates/{entry.id}.json"
    cand = _load_json(run, cand_rel, "the report names a candidate that update did not write")
    _check_candidate(run, cand_rel, cand, entry)
    policy = Policy.model_validate(cand["policy"])
    facts = entry.model_dump(mode="json")
    decision = decide(facts, settings)
    base = PromoteResult(target=cfg.target, action="dry-run" if dry_run else "promoted", run=run.run_id,
                         candidate=entry.id, split=report.split, n_samples=report.n_samples, decision=decision,
                         primary=primary_evidence(facts, primary))
    if not decision.passed:
        raise GateFailed(f"candidate {entry.id} of run {run.run_id} did not pass the gate",
                         reasons=list(decision.reasons),
                         hint="see report.html; adjust the gate with --min-improvement or [gate] only with reason",
                         result=base.model_copy(update={"action": "refused"}))
    prod = store.production(ws.prompts_dir, cfg.target)
    base.previous = prod.name if prod else None
    if dry_run:
        base.production = base.previous
        return base
    params = {"candidate": entry.id, "gate": settings.model_dump(mode="json"), "push_phoenix": push_phoenix}
    if run.record("promote") is not None and _find_own_build(ws, cfg.target, run.run_id, policy) is not None:
        return _already_promoted(ws, cfg, run, base)  # whatever the key now (a newer selfimprove, other flags)
    with run.stage("promote", params=params, inputs=["checkpoint.json", cand_rel, report_rel]) as st:
        if st.reused:
            return _already_promoted(ws, cfg, run, base)
        manifest = run.manifest()
        written, parent = _ensure_baseline(ws, cfg.target, Policy.model_validate(baseline_policy), run.run_id)
        build = _find_own_build(ws, cfg.target, run.run_id, policy)
        if build is None:
            doc = report.document()
            evidence = {**facts, "primary": base.primary, "baseline_policy_digest": parent.policy_digest,
                        "report": {"path": report_rel, "digest": digest(doc), "split": report.split,
                                   "n_samples": report.n_samples, "baseline": doc["baseline"],
                                   "judge_override": doc["judge_override"]},
                        "gate": {"settings": settings.model_dump(mode="json"), "warnings": list(decision.warnings)}}
            build = Build(target=cfg.target, version=_next_version(ws, cfg.target), policy=policy,
                          policy_digest=policy.digest, parent=parent.name, parent_digest=parent.digest,
                          run=run.run_id, run_manifest_digest=manifest["digest"], evidence=evidence)
            store.write_build(ws.prompts_dir, build)
            written.append(build.name)
        store.move_ref(ws.prompts_dir, build, reason=f"promote {entry.id} from run {run.run_id}")
        phoenix = _push(cfg, build) if push_phoenix else None
        st.write_json("promotion.json", {"schema": PROMOTION_SCHEMA, "candidate": entry.id, "build": build.name,
                                         "build_digest": build.digest, "parent": parent.name,
                                         "builds_written": written, "decision": decision.model_dump(mode="json"),
                                         "phoenix": phoenix})
    return base.model_copy(update={"builds_written": written, "build": build.name, "build_digest": build.digest,
                                   "production": build.name, "phoenix": phoenix})


def _experiment_folder(run, candidate: str | None) -> str | None:
    """`experiments/<id>` when `candidate` names an experiment recorded in the run (its test arm is promoted on
    its own report), else None."""
    from selfimprove.core.hypothesis import experiment_dir

    if not candidate or not candidate.startswith("h-"):
        return None
    rel = experiment_dir(candidate)
    if run.record(f"experiment.{candidate}") is None:
        raise UsageError(f"run {run.run_id} holds no experiment {candidate}",
                         hint="`selfimprove experiments` lists them with their runs (pass --run)")
    return rel


def _experiment_control(run, folder: str) -> dict[str, Any]:
    """The control policy an experiment measured against; only production or a build may be the parent of a
    promoted policy (a policy file is no build: promoting against it would prove nothing about production)."""
    from selfimprove.store.documents import read_json

    hyp = read_json(run.path / folder / "hypothesis.json", "hypothesis")
    if hyp["control"]["kind"] not in ("production", "build"):
        raise GateFailed(f"experiment {hyp['id']} measured its test arm against a {hyp['control']['kind']} "
                         f"({hyp['control']['ref']}), not against production or a build",
                         reasons=["only evidence against production or a build can promote"],
                         hint="run the experiment with --control production (the default), then promote")
    policy = read_json(run.path / folder / "control.json", "control policy")
    return {k: v for k, v in policy.items() if k != "schema"}


def _already_promoted(ws, cfg, run, base: PromoteResult) -> PromoteResult:
    done = _load_json(run, "promotion.json", "re-run `selfimprove promote`")
    return base.model_copy(update={"action": "already promoted", "build": done["build"],
                                   "build_digest": done["build_digest"], "builds_written": [],
                                   "production": _prod_name(ws, cfg.target), "phoenix": done.get("phoenix")})


def _check_candidate(run, rel: str, cand: dict[str, Any], entry: CandidateEntry) -> None:
    """The candidate file is the one the report evaluated (its digest) and holds the evaluated policy."""
    from selfimprove.store.artifacts import file_digest

    path = run.path / rel
    if file_digest(path)[0] != entry.candidate_digest:
        raise IntegrityError(f"{path} is not the candidate the report evaluated (digest {entry.candidate_digest})",
                             path=str(path))
    policy = Policy.model_validate(cand["policy"])
    if policy.digest != entry.policy_digest:
        raise IntegrityError(f"{rel} holds policy {policy.digest}, the report evaluated {entry.policy_digest}",
                             path=str(path))


def _pick_candidate(report: Report, candidate: str | None, settings) -> CandidateEntry:
    entries = {c.id: c for c in report.candidates}
    if candidate is not None:
        if candidate not in entries:
            raise UsageError(f"candidate {candidate!r} is not in the report",
                             hint=f"evaluated candidates: {', '.join(entries) or 'none'}")
        return entries[candidate]
    if report.best in entries:
        return entries[report.best]
    if not entries:
        raise GateFailed("the report holds no evaluated candidate", reasons=[("update produced no candidate that "
                         "passed its guards, or evaluate was run on none")])
    # No best: say why each candidate would fail, and promote nothing (choosing among losers after the fact
    # would be a multiple comparison the report's statistics do not cover).
    reasons = [f"{cid}: {r}" for cid, e in entries.items() for r in decide(e.model_dump(), settings).reasons]
    raise GateFailed("the report names no best candidate", reasons=reasons or ["evaluate chose none"],
                     hint="pass --candidate ID to gate one candidate explicitly")


def gate_settings(cfg: Any, report: Report, min_improvement: float | None = None) -> Any:
    """The gate's settings for a report: the target's [gate], its alpha, the report's primary eval, its family of
    candidates' decision-test p-values (Holm) and its look (promote decides with them; evaluate's report.html
    previews the same decision)."""
    return settings_for_report(cfg.gate, report.model_dump(mode="json"), report.primary_eval,
                               alpha=cfg.evaluate.alpha, min_improvement=min_improvement)


def _ensure_baseline(ws, target: str, baseline: Policy, run_id: str) -> tuple[list[str], Build]:
    """The build holding the run's baseline policy (production's if it is that one); written if missing."""
    prod = store.production(ws.prompts_dir, target)
    if prod is not None and prod.policy_digest == baseline.digest:
        return [], prod
    for b in reversed(store.list_builds(ws.prompts_dir, target)):
        if b.policy_digest == baseline.digest:
            return [], b
    build = Build(target=target, version=_next_version(ws, target), policy=baseline, policy_digest=baseline.digest,
                  parent=prod.name if prod else None, parent_digest=prod.digest if prod else None,
                  evidence={"kind": "baseline", "observed_in_run": run_id,
                            "note": "the policy production ran when this run's data was collected"})
    store.write_build(ws.prompts_dir, build)
    return [build.name], build


def _find_own_build(ws, target: str, run_id: str, policy: Policy) -> Build | None:
    for b in store.list_builds(ws.prompts_dir, target):
        if b.run == run_id and b.policy_digest == policy.digest:
            return b
    return None


def _next_version(ws, target: str) -> int:
    existing = store.list_builds(ws.prompts_dir, target)
    return max((b.version for b in existing), default=0) + 1


def _prod_name(ws, target: str) -> str | None:
    prod = store.production(ws.prompts_dir, target)
    return prod.name if prod else None


def _push(cfg, build: Build, note: str = "") -> dict[str, Any]:
    from selfimprove.telemetry.phoenix_prompts import client, push_build

    px_cfg = cfg.telemetry.phoenix
    return push_build(client(px_cfg.endpoint, px_cfg.api_key_env), build, note=note)
