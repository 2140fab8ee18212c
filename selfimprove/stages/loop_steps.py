"""Steps of `selfimprove run` (stages/loop.py) that are more than a call of a stage: where the loop starts
(`pull_or_resume`) and production's online check (`monitor_step`).

Resuming: a `run` stopped while its update or evaluate waited for a Batch API batch (kill -9, a reboot, a cron
timeout) leaves batches that are submitted and paid for, journalled in its run folder (llm/batch_journal). The next
`run` of the target finishes that run instead of pulling: its stages are re-entered on the same run (those done are
reused by their stage keys), and the batches are waited for, never sent again (docs/batch.md). New traffic waits for
the run after; the pull cursor has not moved past it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfimprove.core.errors import NothingNew


def interrupted_run(ws: Any, target: str) -> tuple[Any, int] | None:
    """(the target's latest run, its batches still pending) when that run has batches submitted and not collected;
    else None."""
    from selfimprove.llm.batch_journal import BatchJournal

    runs = ws.runs(target)
    if not runs:
        return None
    pending = sum(1 for r in BatchJournal(runs[-1].path / "cache" / "batches").records() if r.pending)
    return (runs[-1], pending) if pending else None


def pull_or_resume(ws: Any, target: str, common: dict[str, Any], *, since: str | None, until: str | None,
                   limit: int | None) -> tuple[Any, str, str]:
    """(run, status, detail) of the loop's first step: the interrupted run to finish ("resumed"), else a pull into
    a new run ("done"), or (None, "skipped", why) when there is nothing new."""
    interrupted = interrupted_run(ws, target)
    if interrupted is not None:
        run, pending = interrupted
        return run, "resumed", (f"run {run.run_id} stopped with {pending} batch(es) submitted and not collected: "
                                "finishing it, without sending them again, before pulling anything new")
    from selfimprove.stages.pull import pull

    try:
        pulled = pull(**common, since=since, until=until, limit=limit)
    except NothingNew as exc:
        return None, "skipped", exc.message
    return ws.open_run(target, pulled.run), "done", (f"{pulled.spans} spans, {pulled.annotations} annotations "
                                                     f"(since {pulled.since or 'the beginning'})")


def monitor_step(ws: Any, cfg: Any, run: Any, checkpoint: Any, primary: str | None, result: Any,
                 step: Callable, t0: float, *, dry_run: bool) -> bool:
    """Production's online score on this run's judged calls against the held-out score it was promoted on;
    a significant drop beyond [monitor] margin is a regression (and, with on_regression = "rollback", production
    moves back to its parent build). Returns whether production regressed."""
    from selfimprove.core.online import monitor_check, promoted_score
    from selfimprove.dataset.online import policy_scores
    from selfimprove.store import builds as store

    prod = store.production(ws.prompts_dir, cfg.target)
    if prod is None or primary is None:
        return False
    scores, clusters = policy_scores(run.path, checkpoint, prod.policy_digest, primary)
    check = monitor_check(scores, clusters, promoted_score(prod, store.list_builds(ws.prompts_dir, cfg.target),
                                                           primary),
                          margin=cfg.monitor.margin, alpha=cfg.evaluate.alpha, min_samples=cfg.monitor.min_samples)
    result.monitor = {"build": prod.name, **check.model_dump(mode="json"), "on_regression": cfg.monitor.on_regression}
    result.regressed, result.production = check.regressed, prod.name
    detail = f"{prod.name}: {check.reason}"
    if check.regressed and cfg.monitor.on_regression == "rollback" and prod.parent and not dry_run:
        parent = store.read_named_build(ws.prompts_dir, cfg.target, prod.parent)
        store.move_ref(ws.prompts_dir, parent, reason=f"run {run.run_id}: {prod.name} regressed online ({check.reason})")
        result.production = parent.name
        detail += f"; production rolled back to {parent.name}"
    elif check.regressed and cfg.monitor.on_regression == "update":
        detail += "; updating (the trigger is ignored)"
    step("monitor", "regressed" if check.regressed else "done", detail, t0)
    return check.regressed
