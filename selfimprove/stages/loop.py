"""`selfimprove run`: the whole loop for cron — pull → snapshot → trigger → update → evaluate → promote.

Contract:
- Holds the target's lock for the whole loop (a second `run` of the target fails fast, or waits with `wait`).
- Pull starts at the target's cursor, so each run sees only new traffic; nothing new is an outcome
  ("nothing new", exit 0), not an error.
- The trigger (`[trigger]`) decides whether to spend on an update: skip with fewer than `min_new_samples` new
  samples, or when the current policy's mean primary score on them is at least `skip_above_score`. A skip is an
  outcome ("skipped", exit 0); the run folder keeps the pulled data.
- Update and evaluate run with `yes=True` within their configured budgets (`update.max_calls`,
  `evaluate.max_calls`/`max_usd`). Promote applies the gate; a refusal is the outcome "refused" (the CLI exits 3)
  and moves nothing.
- Evaluate tests `candidates` (default `best`: the one update chose on its validation slice of train), so the
  held-out test compares one candidate and the gate's Holm family has one member; `all` compares every candidate
  that passed its guards (K = their number). When update found no candidate better than the current policy
  (`best` null), nothing is evaluated and the outcome is "refused" (no candidate earned promotion).
- Every step's status, detail and duration are in the result, read from the run's artifacts (the contracts
  between stages), so the summary does not depend on each stage's result type.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.core.errors import GateFailed, SelfimproveError
from selfimprove.core.report import Report
from selfimprove.stages.loop_steps import monitor_step, pull_or_resume
from selfimprove.store.documents import read_json


class Step(BaseModel):
    stage: str
    status: str  # "done" | "skipped" | "refused" | "go"
    detail: str = ""
    seconds: float = 0.0


class LoopResult(BaseModel):
    target: str
    outcome: str  # "promoted" | "refused" | "skipped" | "nothing new" | "dry-run"
    run: str | None = None
    run_path: str | None = None
    steps: list[Step] = []
    trigger: dict[str, Any] = {}
    decision: dict[str, Any] | None = None
    refusal: dict[str, Any] | None = None  # {"message", "reasons"} when the gate refused
    primary: dict[str, Any] | None = None
    build: str | None = None
    previous: str | None = None
    production: str | None = None
    candidates: int = 0
    evaluated: int = 0  # candidates compared on the held-out samples (the gate's K)
    calls: int | None = None
    cost_usd: float | None = None
    report_html: str | None = None
    rollout: dict[str, Any] | None = None  # the active rollout's online evidence and decision (rollout status's)
    monitor: dict[str, Any] | None = None  # production's online score against its held-out score
    regressed: bool = False  # the monitor found production significantly below its promoted score
    seconds: float = 0.0


def trigger_decision(n_new: int, score: float | None, trigger: Any) -> dict[str, Any]:
    """Pure: go or skip, with the reason. `score` is the current policy's mean primary score on the new samples."""
    out = {"new_samples": n_new, "score": score, "min_new_samples": trigger.min_new_samples,
           "skip_above_score": trigger.skip_above_score, "go": True, "reason": ""}
    if n_new < trigger.min_new_samples:
        out.update(go=False, reason=f"{n_new} new samples, fewer than trigger.min_new_samples="
                                    f"{trigger.min_new_samples}")
    elif trigger.skip_above_score is not None and score is not None and score >= trigger.skip_above_score:
        out.update(go=False, reason=f"the current policy scores {score:.3f} on the new samples, at least "
                                    f"trigger.skip_above_score={trigger.skip_above_score}")
    else:
        score_text = f"; current score {score:.3f}" if score is not None else ""
        out["reason"] = f"{n_new} new samples ≥ {trigger.min_new_samples}{score_text}"
    return out


def run_loop(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
             since: str | None = None, until: str | None = None, limit: int | None = None,
             trials: int | None = None, max_calls: int | None = None, min_improvement: float | None = None,
             seed: int = 0, candidates: str = "best", dry_run: bool = False, push_phoenix: bool = False, force_update: bool = False,
             wait: bool = False, batch: bool | None = None, on_step: Callable[[Step], None] | None = None,
             log: Callable[[str], None] | None = None) -> LoopResult:
    """Run the loop once for one target; see the module docstring. `force_update` ignores the trigger;
    `candidates` is what evaluate tests: best (default), all, or a candidate id; `batch` (default: config
    llm.batch.enabled) sends update's and evaluate's replays and judge calls through the Batch API (docs/batch.md).
    `log(line)` receives update's and evaluate's log lines (warnings, the estimate, the Batch API's progress)."""
    from selfimprove.config.load import load_target
    from selfimprove.dataset.table import load_checkpoint
    from selfimprove.store.runs import Workspace

    started = time.monotonic()
    cfg = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    result = LoopResult(target=cfg.target, outcome="running")
    common = {"root": root, "target": target, "overrides": overrides}

    def step(stage: str, status: str, detail: str, t0: float) -> None:
        s = Step(stage=stage, status=status, detail=detail, seconds=round(time.monotonic() - t0, 2))
        result.steps.append(s)
        if on_step:
            on_step(s)

    def finish(outcome: str) -> LoopResult:
        result.outcome = outcome
        result.seconds = round(time.monotonic() - started, 2)
        return result

    with ws.lock(cfg.target, wait=wait):
        t0 = time.monotonic()
        run, status, detail = pull_or_resume(ws, cfg.target, common, since=since, until=until, limit=limit)
        step("pull", status, detail, t0)
        if run is None:
            return finish("nothing new")
        result.run, result.run_path = run.run_id, str(run.path)
        resumed = status == "resumed"  # an interrupted run's batches are paid for: finish that run first

        t0 = time.monotonic()
        _stage("snapshot", lambda: _snapshot(common, run.run_id))
        checkpoint = load_checkpoint(run)
        primary = cfg.evals.primary or checkpoint.primary_eval
        n_new, score, split = _new_samples(run.path, checkpoint.policy.digest, primary)
        step("snapshot", "done", f"{n_new} samples ({split.get('train', 0)} train / {split.get('test', 0)} "
                                 f"held out), primary eval {primary}", t0)

        t0 = time.monotonic()
        from selfimprove.store.rollouts import active

        if not resumed and active(ws.prompts_dir, cfg.target) is not None:
            from selfimprove.stages.rollout import rollout_in_run

            return finish(rollout_in_run(ws, cfg, result, step, t0, dry_run=dry_run, push_phoenix=push_phoenix))
        # the interrupted run passed its monitor and trigger already (a rollback is not done twice)
        regressed = not resumed and monitor_step(ws, cfg, run, checkpoint, primary, result, step, t0,
                                                 dry_run=dry_run)
        if regressed and cfg.monitor.on_regression != "update":
            return finish("regressed")
        force_update = force_update or regressed

        result.trigger = trigger_decision(n_new, score, cfg.trigger)
        if not result.trigger["go"] and not force_update and not resumed:
            step("trigger", "skipped", result.trigger["reason"], time.monotonic())
            return finish("skipped")
        why = " (resuming the interrupted run)" if resumed else " (forced)" if force_update else ""
        step("trigger", "go", result.trigger["reason"] + why, time.monotonic())

        t0 = time.monotonic()
        from selfimprove.stages.update import update

        updated = _stage("update", lambda: update(**common, run=run.run_id, trials=trials, optimizer=None,
                                                  rounds=None, max_calls=max_calls, seed=seed, yes=True,
                                                  force=False, wait=False, batch=batch, log=log))
        cands = _candidates(run.path)
        result.candidates = len(cands)
        passed = sum(1 for c in cands if all(g.get("passed") for g in c.get("guards", [])))
        step("update", "done", f"{len(cands)} candidate(s), {passed} passed the guards" + _spend(updated), t0)

        if candidates == "best" and _update_best(run.path) is None:
            reason = (f"update found no best candidate: none of its {len(cands)} candidate(s) beat the current "
                      "policy on the validation slice of train")
            step("evaluate", "skipped", reason, time.monotonic())
            result.refusal = {"message": "no candidate to evaluate", "reasons": [reason]}
            step("promote", "refused", "no candidate to evaluate: " + reason, time.monotonic())
            result.calls, result.cost_usd = _total_spent(updated)
            result.production = _production(ws, cfg.target)
            return finish("refused")

        t0 = time.monotonic()
        from selfimprove.stages.evaluate import evaluate

        evaluated = _stage("evaluate", lambda: evaluate(**common, run=run.run_id, candidates=candidates,
                                                        split="test", n=None, concurrency=None, baseline=None,
                                                        focus="all", yes=True, force=False, wait=False,
                                                        batch=batch, log=log))
        report = evaluated.report
        result.evaluated = len(report.candidates)
        result.calls, result.cost_usd = _total_spent(updated, evaluated)
        html = run.path / "report.html"
        result.report_html = str(html) if html.is_file() else None
        step("evaluate", "done", _evaluate_detail(report, primary) + _spend(evaluated), t0)

        t0 = time.monotonic()
        from selfimprove.stages.promote import promote

        try:
            promoted = promote(**common, run=run.run_id, candidate=None, min_improvement=min_improvement,
                               dry_run=dry_run, push_phoenix=push_phoenix, to=None, wait=False)
        except GateFailed as exc:
            refused = exc.result
            if refused is not None:
                result.decision = refused.decision.model_dump(mode="json")
                result.primary = refused.primary
            result.refusal = {"message": exc.message, "reasons": list(exc.reasons)}
            step("promote", "refused", exc.message + ": " + "; ".join(exc.reasons), t0)
            result.production = _production(ws, cfg.target)
            return finish("refused")
        result.decision = promoted.decision.model_dump(mode="json") if promoted.decision else None
        result.primary, result.build = promoted.primary, promoted.build
        result.previous, result.production = promoted.previous, promoted.production
        if dry_run:
            step("promote", "done", "dry run: the gate passes; nothing written", t0)
            return finish("dry-run")
        written = ", ".join(promoted.builds_written) or "none"
        step("promote", "done", f"{promoted.build} is production (builds written: {written})", t0)
        return finish("promoted")


def _stage(name: str, fn: Callable[[], Any]) -> Any:
    """Run one stage; an expected failure names the stage it stopped at."""
    try:
        return fn()
    except GateFailed:
        raise
    except SelfimproveError as exc:
        exc.message = f"run stopped at {name}: {exc.message}"
        exc.args = (exc.message,)
        raise


def _snapshot(common: dict[str, Any], run_id: str) -> Any:
    from selfimprove.stages.snapshot import snapshot

    return snapshot(**common, run=run_id, test_size=None, seed=None, max_samples=None, diverse=False,
                    filters=[], policy=None, force=False, wait=False)


def _new_samples(run_path: Path, current: str, primary: str | None) -> tuple[int, float | None, dict]:
    """(samples in this run, the mean primary score on them of the current policy (digest `current`), samples per
    split)."""
    from selfimprove.dataset.table import read_samples

    samples = read_samples(run_path / "dataset.parquet")
    split: dict[str, int] = {}
    for s in samples:
        split[s.split] = split.get(s.split, 0) + 1
    scores = [s.evals[primary].score for s in samples
              if primary in s.evals and s.evals[primary].score is not None
              and (s.policy_digest in (None, current))]
    return len(samples), (sum(scores) / len(scores) if scores else None), split


def _update_best(run_path: Path) -> str | None:
    """The candidate update chose on its validation slice (`update.json` "best"), or None."""
    path = run_path / "update.json"
    return read_json(path, "update result").get("best") if path.is_file() else None


def _candidates(run_path: Path) -> list[dict[str, Any]]:
    return [read_json(p, "candidate") for p in sorted((run_path / "candidates").glob("*.json"))]


def _evaluate_detail(report: Report, primary: str | None) -> str:
    best = report.best
    entries = report.candidates
    entry = report.entry(best) or (entries[0] if len(entries) == 1 else None)
    if entry is None:
        return f"{len(entries)} candidate(s) evaluated; none passes the gate"
    which = f"best {best}" if best else f"{entry.id} (does not pass the gate)"
    if len(entries) > 1:
        which = f"{len(entries)} candidates compared; {which}"
    e = entry.evals.get(primary or report.primary_eval)
    if e is None or e.diff is None:
        return f"{which}: no estimate for {primary}"
    ci_text = f"[{e.ci[0]:+.3f}, {e.ci[1]:+.3f}]" if e.ci else "-"

    def num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    test = f"; {e.test.reason}" if e.test else ""
    return (f"{which}: {primary} {num(e.baseline_mean)} → {num(e.candidate_mean)} "
            f"(Δ {e.diff:+.3f}, 95% CI {ci_text}, n={e.n}, {e.clusters} clusters){test}")


def _spent(result: Any) -> tuple[int, float] | None:
    """(LLM calls sent, dollars) by one stage's invocation: every attempt the ledger booked, cache hits free.
    Update reports `calls`/`cost_usd`, evaluate a `spent` dict; None for a stage that reports neither."""
    spent = getattr(result, "spent", None)
    if isinstance(spent, dict) and "calls" in spent:
        return int(spent["calls"]), float(spent.get("cost_usd") or 0.0)
    calls = getattr(result, "calls", None)
    if isinstance(calls, int):
        return calls, float(getattr(result, "cost_usd", None) or 0.0)
    return None


def _spend(result: Any) -> str:
    spent = _spent(result)
    if spent is None:
        return ""
    calls, cost = spent
    spent_doc = getattr(result, "spent", None)
    batched = spent_doc.get("batched") if isinstance(spent_doc, dict) else None  # evaluate says how many
    return f"; {calls} calls" + (f" ({batched} through the Batch API)" if batched else "") + \
        (f", ${cost:.4f}" if cost else "")


def _total_spent(*results: Any) -> tuple[int | None, float | None]:
    """Calls and dollars of every stage of the run (None when no stage reported any)."""
    spent = [s for s in (_spent(r) for r in results) if s is not None]
    if not spent:
        return None, None
    return sum(c for c, _ in spent), round(sum(d for _, d in spent), 6)


def _production(ws: Any, target: str) -> str | None:
    from selfimprove.store.builds import production

    prod = production(ws.prompts_dir, target)
    return prod.name if prod else None
