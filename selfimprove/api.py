"""The library face of the commands: `selfimprove.pull`, `.snapshot`, `.update`, `.evaluate`, `.promote` (and
`.run`, `.experiment`), each taking a target and a typed options object and returning the stage's typed result, with async twins
(`apull`, ...). They do exactly what the CLI commands do, minus the terminal: nothing is printed and nothing is
asked — a step that would ask (a spend above the budget) refuses with a hint unless its options say `yes`.

Every function works inside a running event loop (Jupyter, an async web handler): the LLM work runs on its own
loop in a worker thread (selfimprove.llm.run.run_sync), and the async twins run the whole stage in a thread so the
caller's loop stays free.

    import selfimprove as si
    pulled = si.pull("support", si.PullOptions(since="2024-05-01"), root="work")
    snap = si.snapshot("support", root="work")
    upd = si.update("support", si.UpdateOptions(trials=5, yes=True), root="work")
    report = si.evaluate("support", si.EvaluateOptions(yes=True), root="work").report
    si.promote("support", root="work")

An options object's fields are the command's flags, with the same defaults (None: the config's value);
tests/test_api.py checks them against the stages' signatures so that the two faces cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PullOptions(_Options):
    """`selfimprove pull`: the window and source to read."""

    since: str | datetime | None = None
    until: str | datetime | None = None
    limit: int | None = None
    source: str | None = None
    wait: bool = False


class SnapshotOptions(_Options):
    """`selfimprove snapshot`: which run, how to select and split samples."""

    run: str | None = None
    test_size: float | None = None
    seed: int | None = None
    max_samples: int | None = None
    diverse: bool = False
    filters: tuple[str, ...] = ()
    policy: str | None = None
    force: bool = False
    wait: bool = False
    fork: bool = False


class UpdateOptions(_Options):
    """`selfimprove update`: the optimizer and its budget."""

    run: str | None = None
    trials: int | None = None
    optimizer: str | None = None
    rounds: int | None = None
    max_calls: int | None = None
    seed: int = 0
    yes: bool = False
    force: bool = False
    wait: bool = False
    fewshot: int = 0
    focus: str | None = None
    critique: bool | None = None
    fork: bool = False
    batch: bool | None = None  # None: config llm.batch.enabled (docs/batch.md)


class EvaluateOptions(_Options):
    """`selfimprove evaluate`: which candidates, on which samples, against which baseline."""

    run: str | None = None
    candidates: str = "best"
    split: str = "test"
    n: int | None = None
    concurrency: int | None = None
    baseline: str | None = None
    focus: str = "all"
    yes: bool = False
    force: bool = False
    wait: bool = False
    fork: bool = False
    batch: bool | None = None  # None: config llm.batch.enabled (docs/batch.md)


class PromoteOptions(_Options):
    """`selfimprove promote`: which candidate, and the gate's threshold."""

    run: str | None = None
    candidate: str | None = None
    min_improvement: float | None = None
    dry_run: bool = False
    push_phoenix: bool = False
    to: str | None = None
    wait: bool = False


class RunOptions(_Options):
    """`selfimprove run`: the whole loop once."""

    since: str | None = None
    until: str | None = None
    limit: int | None = None
    trials: int | None = None
    max_calls: int | None = None
    min_improvement: float | None = None
    seed: int = 0
    candidates: str = "best"
    dry_run: bool = False
    push_phoenix: bool = False
    force_update: bool = False
    wait: bool = False
    batch: bool | None = None  # None: config llm.batch.enabled (docs/batch.md)


def _common(target: str | None, root: str | Path, overrides: Sequence[str]) -> dict[str, Any]:
    return {"root": root, "target": target, "overrides": list(overrides) or None}


def pull(target: str | None = None, options: PullOptions | None = None, *, root: str | Path = ".",
         overrides: Sequence[str] = (), on_progress: Callable[[Any], None] | None = None) -> Any:
    """Pull new spans and eval annotations into a new run folder; returns a `stages.pull.PullResult`."""
    from selfimprove.stages.pull import pull as stage

    return stage(**_common(target, root, overrides), **(options or PullOptions()).model_dump(),
                 on_progress=on_progress)


def snapshot(target: str | None = None, options: SnapshotOptions | None = None, *, root: str | Path = ".",
             overrides: Sequence[str] = ()) -> Any:
    """Build the dataset and checkpoint of a run; returns a `stages.snapshot.SnapshotResult`."""
    from selfimprove.stages.snapshot import snapshot as stage

    o = (options or SnapshotOptions()).model_dump()
    return stage(**_common(target, root, overrides), **o)


def update(target: str | None = None, options: UpdateOptions | None = None, *, root: str | Path = ".",
           overrides: Sequence[str] = (), log: Callable[[str], None] | None = None) -> Any:
    """Propose candidates from the judges' feedback; returns a `stages.update.UpdateResult`."""
    from selfimprove.stages.update import update as stage

    return stage(**_common(target, root, overrides), **(options or UpdateOptions()).model_dump(), log=log)


def evaluate(target: str | None = None, options: EvaluateOptions | None = None, *, root: str | Path = ".",
             overrides: Sequence[str] = (), log: Callable[[str], None] | None = None,
             progress: Callable[[int, int, int], None] | None = None) -> Any:
    """Replay held-out samples and decide with statistics; returns a `stages.evaluate.EvalReport` (its
    `.report` is the typed report.json)."""
    from selfimprove.stages.evaluate import evaluate as stage

    return stage(**_common(target, root, overrides), **(options or EvaluateOptions()).model_dump(), log=log,
                 progress=progress)


def promote(target: str | None = None, options: PromoteOptions | None = None, *, root: str | Path = ".",
            overrides: Sequence[str] = ()) -> Any:
    """Apply the gate and promote the best candidate; returns a `stages.promote.PromoteResult`. A refusal raises
    `GateFailed` (exit code 3 on the CLI) carrying the decision."""
    from selfimprove.stages.promote import promote as stage

    return stage(**_common(target, root, overrides), **(options or PromoteOptions()).model_dump())


def run(target: str | None = None, options: RunOptions | None = None, *, root: str | Path = ".",
        overrides: Sequence[str] = (), on_step: Callable[[Any], None] | None = None,
        log: Callable[[str], None] | None = None) -> Any:
    """The whole loop once (pull → snapshot → update → evaluate → promote); returns a `stages.loop.LoopResult`."""
    from selfimprove.stages.loop import run_loop

    return run_loop(**_common(target, root, overrides), **(options or RunOptions()).model_dump(), on_step=on_step,
                    log=log)


def experiment(target: str | None = None, options: Any = None, *, root: str | Path = ".",
               overrides: Sequence[str] = (), yes: bool = False, force: bool = False, wait: bool = False,
               log: Callable[[str], None] | None = None,
               progress: Callable[[int, int, int], None] | None = None) -> Any:
    """Test a hand-written change on held-out data (`ExperimentOptions(test="mine.toml", control="production",
    ...)`, the `experiment` command's flags); returns a `stages.experiment.ExperimentReport` whose
    `.result.outcome` is "accepted" or "refused" (a refusal is a result here, exit 3 on the CLI)."""
    from selfimprove.core.errors import UsageError
    from selfimprove.stages.experiment import experiment as stage

    if options is None:
        raise UsageError("an experiment needs its test arm", hint="pass ExperimentOptions(test='mine.toml')")
    return stage(**_common(target, root, overrides), options=options, yes=yes, force=force, wait=wait, log=log,
                 progress=progress)


def _async_twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def twin(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    twin.__name__ = twin.__qualname__ = f"a{fn.__name__}"
    twin.__doc__ = f"`{fn.__name__}` without blocking the caller's event loop: the stage runs in a worker thread."
    return twin


apull = _async_twin(pull)
asnapshot = _async_twin(snapshot)
aupdate = _async_twin(update)
aevaluate = _async_twin(evaluate)
apromote = _async_twin(promote)
arun = _async_twin(run)
aexperiment = _async_twin(experiment)
