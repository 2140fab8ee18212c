"""`evaluate`: replay candidates on held-out data, re-judge, decide with statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import (
    BatchOpt,
    ForceOpt,
    ForkOpt,
    JsonOpt,
    RootOpt,
    RunOpt,
    SetOpt,
    TargetOpt,
    WaitOpt,
    YesOpt,
)
from selfimprove.cli.output import handle_errors


@handle_errors
def evaluate(
    candidates: Annotated[str, typer.Option(
        help="best: the candidate update chose on its validation slice of train (default; the gate then compares "
             "one candidate); all: every candidate that passed its guards (the gate divides alpha by their "
             "number); or a candidate id.")] = "best",
    split: Annotated[str, typer.Option(help="Which samples to replay: test (held out) or train.")] = "test",
    n: Annotated[int | None, typer.Option(help="At most this many samples.", min=1)] = None,
    concurrency: Annotated[int | None, typer.Option(help="Parallel LLM calls (default: config, 32).",
                                                       min=1)] = None,
    baseline: Annotated[str | None, typer.Option(help="replay: re-run the current policy now (default); "
                                                         "stored: reuse production scores (cheaper, drifts).")] = None,
    focus: Annotated[str, typer.Option(help="all, or discriminative: spend the budget where policies differ.")] = "all",
    batch: BatchOpt = None,
    yes: YesOpt = False,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    force: ForceOpt = False,
    fork: ForkOpt = False,
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Score candidates against the current policy on held-out samples: results.parquet, report.json, report.html."""
    from selfimprove.cli.output import asker, evaluate_progress, log_line
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.evaluate import render_evaluate
    from selfimprove.stages.evaluate import evaluate as run_evaluate

    result = run_evaluate(root=root, target=target, overrides=set_, run=run, candidates=candidates, split=split,
                          n=n, concurrency=concurrency, baseline=baseline, focus=focus, yes=yes, force=force, fork=fork,
                          wait=wait, confirm=asker(), log=log_line, progress=evaluate_progress(), batch=batch)
    render_result("selfimprove.evaluate/1", result, json_output, render_evaluate)
