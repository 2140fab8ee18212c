"""`experiment`: is *my* change better? Replay the held-out data under a control and a test policy, decide with the
statistics and the gate `evaluate` uses, and record the hypothesis with its result.

Arms: the control is `production` (the policy the `production` ref names, else the run's current policy), a build
(`v0003`) or a policy file; the test is a policy file, a build or a candidate of the run. A policy file is TOML or
JSON in the `Policy` shape (config/policy_file.py); `control_set`/`test_set` apply `KEY=VALUE` overrides to an arm
(`temperature=0.2`), so a one-parameter experiment needs no file at all.

Writes, in the run folder, the stage `experiment.<id>` with `experiments/<id>/`: `hypothesis.json` (a
core.hypothesis.Hypothesis), `control.json` (the control policy), `candidate.json` (the test arm as a Candidate,
which `promote --candidate <id>` reads), `results.parquet`, `report.json` (the same Report document evaluate
writes, the control as its baseline), `report.html` and `result.json` (a core.hypothesis.ExperimentResult: accepted
when the gate passed, refused with every reason otherwise). They are stage outputs: chained in the manifest and
covered by `verify`. The same experiment asked again is reused; `force` recomputes it from the call cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError
from selfimprove.core.hypothesis import ArmSource, ExperimentResult, Hypothesis
from selfimprove.core.records import Candidate, Edit, Policy

FOLDER = "experiments"


class ExperimentOptions(BaseModel):
    """What to test (see the module docstring)."""

    control: str = "production"
    test: str
    hypothesis: str = ""
    metric: str | None = None
    expected_effect: float | None = Field(None, gt=0, le=1)
    split: str = "test"
    control_set: list[str] = Field(default_factory=list)
    test_set: list[str] = Field(default_factory=list)
    n: int | None = None
    concurrency: int | None = None
    phoenix: bool | None = None  # None: on when the target's telemetry source is Phoenix


class ExperimentReport(BaseModel):
    """What `experiment` found, what it spent now, and where Phoenix shows it."""

    target: str
    run: str
    reused: bool = False
    hypothesis: Hypothesis
    result: ExperimentResult
    spent: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list)
    phoenix: dict[str, Any] | None = None


def experiment_dir(hid: str) -> str:
    return f"{FOLDER}/{hid}"


def resolve_arm(spec: str, overrides: list[str], *, role: str, ws: Any, target: str, run: Any,
                current: Policy) -> tuple[ArmSource, Policy, str | None]:
    """(source, policy, build name) of one arm. `production` is the control only; a candidate the test only."""
    from selfimprove.config.policy_file import load_policy, with_overrides
    from selfimprove.store import builds

    text = spec.strip()
    path = Path(text)
    build = None
    if text == "production":
        if role != "control":
            raise UsageError("--test production: the test arm is the change to try",
                             hint="give --test a policy file, a build (v0003) or a candidate id")
        prod = builds.production(ws.prompts_dir, target)
        kind, policy, build = "production", prod.policy if prod else current, prod.name if prod else None
    elif path.suffix in (".toml", ".json"):
        kind, policy = "file", load_policy(path)
        text = str(path)
    elif text.lower().removeprefix("v").isdigit():
        found = builds.read_named_build(ws.prompts_dir, target, builds.build_name(text))
        kind, policy, build, text = "build", found.policy, found.name, found.name
    elif role == "test":
        cand = _candidate(run, text)
        kind, policy, text = "candidate", cand.policy, cand.id
    else:
        raise UsageError(f"--control {spec!r} is neither production, a build (v0003) nor a policy file "
                         "(.toml or .json)", hint="`selfimprove log` lists the builds")
    policy = with_overrides(policy, overrides, f"--{role}")
    return ArmSource(kind=kind, ref=text, overrides=tuple(overrides), policy_digest=policy.digest), policy, build


def _candidate(run: Any, which: str) -> Candidate:
    from selfimprove.store.documents import read_model

    folder = run.path / "candidates"
    ids = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    hits = [i for i in ids if i == which] or [i for i in ids if i.startswith(which)]
    if len(hits) != 1:
        raise UsageError(f"--test {which!r} is no policy file (.toml or .json), build (v0003) or "
                         f"{'unambiguous ' if hits else ''}candidate of run {run.run_id}",
                         hint=f"candidates: {', '.join(ids) or 'none'}")
    return read_model(folder / f"{hits[0]}.json", Candidate, "candidate", drop=("schema",))


def make_hypothesis(opts: ExperimentOptions, control: tuple[ArmSource, Policy, str | None],
                    test: tuple[ArmSource, Policy, str | None], metric: str, test_name: str) -> Hypothesis:
    from selfimprove.core.hypothesis import hypothesis_id, policy_change

    (csrc, cpol, cbuild), (tsrc, tpol, _) = control, test
    if csrc.policy_digest == tsrc.policy_digest:
        raise UsageError("the test arm is the control's policy: there is nothing to test",
                         hint="change the prompt or a parameter (--test-set temperature=0.2)")
    hid = hypothesis_id(csrc, tsrc, metric, opts.split, opts.expected_effect)
    method = (f"paired replay of the '{opts.split}' split under both arms, re-judged by the captured evals; "
              f"{test_name} on '{metric}' with a cluster bootstrap CI; the promotion gate of [gate]")
    return Hypothesis(id=hid, description=opts.hypothesis, control=csrc, test=tsrc, change=policy_change(cpol, tpol),
                      metric=metric, split=opts.split, expected_effect=opts.expected_effect, method=method,
                      parent=cbuild or cpol.digest)


def test_candidate(hyp: Hypothesis, test: Policy) -> Candidate:
    """The test arm as a candidate (what evaluate's report and promote read): its parent is the control's
    policy, its edits the guidelines it adds and the parameters it changes."""
    edits = [Edit(instruction=g.text, kind="add") for g in hyp.change.guidelines.added]
    edits += [Edit(instruction=g.text, kind="remove") for g in hyp.change.guidelines.removed]
    edits += [Edit(instruction=f"{k}: {a!r} -> {b!r}", kind="param") for k, (a, b) in hyp.change.params.items()]
    return Candidate(id=hyp.id, policy=test, parent=hyp.control.policy_digest, edits=tuple(edits),
                     rationale=hyp.description or f"hand-written: {hyp.test.kind} {hyp.test.ref}")


def outcome(hyp: Hypothesis, report: Any, report_path: str, report_digest: str) -> ExperimentResult:
    """accepted when the gate (the report's decision on the test arm, as evaluate makes it and promote applies it)
    passed, refused with the gate's reasons otherwise."""
    entry = report.entry(hyp.id)
    decision = entry.decision if entry else None
    ev = entry.evals.get(hyp.metric) if entry else None
    test = ev.test if ev else None
    passed = bool(decision and decision.passed)
    reasons = tuple(decision.reasons) if decision else ("the test arm was not evaluated",)
    return ExperimentResult(
        hypothesis=hyp.id, outcome="accepted" if passed else "refused", reasons=reasons,
        warnings=tuple(decision.warnings) if decision else (), metric=hyp.metric, n_samples=entry.n_samples if entry else 0,
        control_mean=ev.baseline_mean if ev else None, test_mean=ev.candidate_mean if ev else None,
        diff=ev.diff if ev else None, ci=tuple(ev.ci) if ev and ev.ci else None,
        p_value=test.p_value if test else None, stop=test.stop if test else None,
        expected_effect=hyp.expected_effect, report=report_path, report_digest=report_digest)
