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
from selfimprove.core.hypothesis import ArmSource, ExperimentResult, Hypothesis, experiment_dir
from selfimprove.core.records import Candidate, Edit, Policy


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


def experiment(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
               run: str | None = None, options: ExperimentOptions, yes: bool = False, force: bool = False,
               wait: bool = False, config: Any = None, confirm: Any = None, log: Any = None,
               progress: Any = None) -> ExperimentReport:
    """Run one experiment (see the module docstring) in `run` (default the latest). `config` replaces loading
    the target config; `confirm`, `log` and `progress` are evaluate's callbacks (stages/evaluate.py: asked when the
    estimate exceeds the budget, the estimate and warnings as they happen, one call per batch)."""
    from selfimprove.config.load import load_target
    from selfimprove.stages.evaluate import Hooks
    from selfimprove.store.runs import Workspace

    cfg = config if config is not None else load_target(Path(root), target, overrides)
    if options.split not in ("test", "train"):
        raise UsageError(f"--split must be test or train, not {options.split!r}")
    cfg = _with_hypothesis_settings(cfg, options)
    ws = Workspace(root)
    with ws.lock(cfg.target, wait=wait):
        the_run = ws.open_run(cfg.target, run)
        report = experiment_in_run(cfg, ws, the_run, options, yes=yes, force=force,
                                   hooks=Hooks(confirm, log, progress))
    if phoenix_on(cfg, options):
        publish_experiment(cfg, the_run, report)
    return report


def _with_hypothesis_settings(cfg: Any, options: ExperimentOptions) -> Any:
    """The config with the hypothesis' metric as the primary eval and its expected effect as the effect the
    decision test is planned for (evaluate.min_effect)."""
    update: dict[str, Any] = {}
    if options.metric:
        update["evals"] = cfg.evals.model_copy(update={"primary": options.metric})
    if options.expected_effect is not None:
        update["evaluate"] = cfg.evaluate.model_copy(update={"min_effect": options.expected_effect})
    return cfg.model_copy(update=update) if update else cfg


def experiment_in_run(cfg: Any, ws: Any, run: Any, options: ExperimentOptions, *, yes: bool, force: bool,
                      hooks: Any = None, arms: tuple[Any, Any] | None = None) -> ExperimentReport:
    """One experiment in an open run, the target locked by the caller; `arms` ((source, policy, build name) of
    the control and the test) replaces resolving `options.control` and `options.test` (ablation builds its own)."""
    from selfimprove.core.canonical import digest, pretty_json
    from selfimprove.core.hypothesis import HYPOTHESIS_SCHEMA, RESULT_SCHEMA
    from selfimprove.core.report import Report
    from selfimprove.core.stats.sequential import TEST_NAME
    from selfimprove.dataset.table import load_checkpoint
    from selfimprove.evaluation import inputs
    from selfimprove.stages.evaluate import WRITTEN_COLUMNS_DROP, Hooks, score_and_report
    from selfimprove.store.artifacts import file_digest
    from selfimprove.store.documents import read_model

    checkpoint = load_checkpoint(run)
    control, test = arms or (
        resolve_arm(options.control, options.control_set, role="control", ws=ws, target=cfg.target, run=run,
                    current=checkpoint.policy),
        resolve_arm(options.test, options.test_set, role="test", ws=ws, target=cfg.target, run=run,
                    current=checkpoint.policy))
    evals = inputs.included_evals(cfg, checkpoint)
    primary = inputs.primary_eval(cfg, checkpoint, evals)
    hyp = make_hypothesis(options, control, test, primary.name, TEST_NAME)
    samples = inputs.load_samples(run, options.split)
    order, _ = inputs.order_samples(samples, cfg.split.seed, options.n, "all", {}, cfg.evaluate.cluster_by)
    concurrency = options.concurrency or cfg.evaluate.concurrency
    judge = inputs.judge_override(cfg)
    folder = experiment_dir(hyp.id)
    params = {"hypothesis": hyp.model_dump(mode="json"), "n": options.n, "concurrency": concurrency,
              "evals": [e.digest for e in evals], "primary": primary.name, "judge": judge, "seed": cfg.split.seed,
              "settings": cfg.evaluate.model_dump(mode="json"), "order": digest([s.sample_id for s in order]),
              "prices": {m: p.model_dump() for m, p in sorted(cfg.llm.prices.items())}, "gate": cfg.gate.model_dump()}
    stage_inputs = ["checkpoint.json", "dataset.parquet"]
    if hyp.test.kind == "candidate":
        stage_inputs.append(f"candidates/{hyp.test.ref}.json")
    files = {k: f"{folder}/{k}" for k in ("hypothesis.json", "control.json", "candidate.json", "results.parquet",
                                          "report.json", "report.html", "result.json")}
    artifacts = list(files.values())
    with run.stage(f"experiment.{hyp.id}", params=params, inputs=stage_inputs, force=force) as st:
        if st.reused:
            report = read_model(run.path / files["report.json"], Report, "experiment report")
            result = read_model(run.path / files["result.json"], ExperimentResult, "experiment result",
                                drop=("schema",))
            return ExperimentReport(target=cfg.target, run=run.run_id, reused=True, hypothesis=hyp, result=result,
                                    artifacts=artifacts)
        st.write_json(files["hypothesis.json"], {"schema": HYPOTHESIS_SCHEMA, **hyp.model_dump(mode="json")})
        st.write_json(files["control.json"], {"schema": "selfimprove.policy/1", **control[1].model_dump(mode="json")})
        cand = test_candidate(hyp, test[1])
        st.write_json(files["candidate.json"], {"schema": "selfimprove.candidate/1", **cand.model_dump(mode="json")})
        digests = {ref["path"]: ref["digest"] for ref in st.inputs}
        digests[files["candidate.json"]] = file_digest(run.path / files["candidate.json"])[0]
        baseline_checkpoint = checkpoint.model_copy(update={"policy": control[1]})
        report, frame, _estimate, spent, warnings = score_and_report(
            cfg, ws, run, baseline_checkpoint, [cand], order, evals, primary, concurrency=concurrency,
            mode="replay", split=options.split, judge_override=judge, yes=yes, hooks=hooks or Hooks(), tags={},
            digests=digests, candidate_files={cand.id: files["candidate.json"]})
        st.write_table(files["results.parquet"], frame.drop(columns=list(WRITTEN_COLUMNS_DROP)))
        doc = report.document()
        st.write_text(files["report.json"], pretty_json(doc))
        st.write_text(files["report.html"], _page(cfg, report, frame, order, control[1], cand))
        result = outcome(hyp, report, files["report.json"], digest(doc))
        st.write_json(files["result.json"], {"schema": RESULT_SCHEMA, **result.model_dump(mode="json")})
    return ExperimentReport(target=cfg.target, run=run.run_id, hypothesis=hyp, result=result, spent=spent,
                            warnings=warnings, artifacts=artifacts)


def _page(cfg: Any, report: Any, frame: Any, samples: list[Any], control: Policy, cand: Candidate) -> str:
    from selfimprove.stages.evaluate import page_html

    return page_html(cfg, report, frame, samples, control, [cand])


def phoenix_on(cfg: Any, options: ExperimentOptions) -> bool:
    if options.phoenix is not None:
        return options.phoenix
    setting = cfg.telemetry.phoenix.experiments
    return cfg.telemetry.source == "phoenix" if setting is None else setting


def publish_experiment(cfg: Any, run: Any, rep: ExperimentReport) -> None:
    """Set `rep.phoenix` to the Phoenix links, or add a warning when Phoenix refuses."""
    rep.phoenix, note = _publish(cfg, run, rep)
    if note:
        rep.warnings.append(note)


def _publish(cfg: Any, run: Any, rep: ExperimentReport) -> tuple[dict[str, Any] | None, str | None]:
    """The held-out samples as a Phoenix dataset and both arms as experiments, the control tagged baseline:
    (links, None), or (None, a warning) when Phoenix refuses — the run folder already holds every result."""
    from selfimprove.evaluation import inputs
    from selfimprove.store.documents import read_frame
    from selfimprove.telemetry.phoenix_experiments import ArmRecord, publish
    from selfimprove.telemetry.phoenix_prompts import client

    hyp = rep.hypothesis
    px_cfg = cfg.telemetry.phoenix
    try:
        frame = read_frame(run.path / experiment_dir(hyp.id) / "results.parquet")
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        used = {r["sample_id"] for r in rows}
        samples = [s for s in inputs.load_samples(run, hyp.split) if s.sample_id in used]
        kinds = {e.name: e.kind.upper() for e in _checkpoint_evals(run)}
        key = {"target": cfg.target, "run": run.run_id, "experiment": hyp.id}
        arms = [ArmRecord(name=f"{hyp.id} control: {hyp.control.ref}", label="baseline", baseline=True,
                          metadata={"selfimprove": {**key, "arm": "control"}, "policy_digest": hyp.control.policy_digest}),
                ArmRecord(name=f"{hyp.id} test: {hyp.test.ref}", label=hyp.id,
                          metadata={"selfimprove": {**key, "arm": "test"}, "policy_digest": hyp.test.policy_digest,
                                    "hypothesis": hyp.description, "outcome": rep.result.outcome})]
        out = publish(client(px_cfg.endpoint, px_cfg.api_key_env), target=cfg.target, split=hyp.split,
                      samples=samples, rows=rows, arms=arms, evals=kinds,
                      description=f"selfimprove {cfg.target}: the '{hyp.split}' split of run {run.run_id}")
    except Exception as exc:  # noqa: BLE001 — Phoenix is a view: its refusal never loses the run
        return None, (f"Phoenix at {px_cfg.endpoint} did not record the experiment ({type(exc).__name__}: "
                      f"{str(exc)[:200]}); every result is in the run folder; re-run the same "
                      "experiment (reused, free) to retry, or pass --no-phoenix")
    return {"dataset": {"id": out.dataset_id, "name": out.dataset_name, "url": out.dataset_url,
                        "examples": out.examples},
            "experiments": {arm: out.experiments[a.name] for arm, a in zip(("control", "test"), arms)}}, None


def _checkpoint_evals(run: Any) -> list[Any]:
    from selfimprove.dataset.table import load_checkpoint

    return list(load_checkpoint(run).evals)
