"""`update`: learn candidate policies from the judges' feedback."""

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
def update(
    trials: Annotated[int | None, typer.Option(help="Updates on different minibatches, merged into one "
                                                       "candidate by an LLM merge step (default: config, 3).",
                                                  min=1)] = None,
    optimizer: Annotated[str | None, typer.Option(help="builtin (textual gradient, default) or gepa (needs the "
                                                          "gepa extra).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Search rounds over the candidate population "
                                                       "(default: config, 2).", min=1)] = None,
    max_calls: Annotated[int | None, typer.Option(help="Hard budget of LLM calls (task, judge and optimizer "
                                                          "calls; default: config update.max_calls).", min=1)] = None,
    fewshot: Annotated[int, typer.Option(help="Try this many few-shot demonstrations from high-scoring train "
                                              "samples; kept only if they win on validation.", min=0)] = 0,
    focus: Annotated[str | None, typer.Option(help="Target one failure cluster (an id from the taxonomy, "
                                                      "f-…).")] = None,
    critique: Annotated[bool | None, typer.Option("--critique/--no-critique",
                                                  help="Before each update, ask the optimizer model for a short "
                                                       "critique of every minibatch sample (one call each, within "
                                                       "--max-calls, never taking the calls the current and next "
                                                       "round need; default: config update.critique, off).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the validation slice, minibatches and search.")] = 0,
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
    """Propose better policies from the checkpoint's failures and the judges' explanations.

    Writes candidates/<id>.json and candidates/<id>.diff (every candidate, guard-rejected ones too, with the
    reason) and update.json; prints the candidates and their diffs. Never looks at the test split.
    """
    import sys

    from selfimprove.cli.output import console, progress_enabled
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.update import render_update
    from selfimprove.stages.update import update as run_update

    confirm = (lambda msg: typer.confirm(msg, default=True, err=True)) if sys.stdin.isatty() else None
    log = (lambda msg: console().print(msg, markup=False, style="dim")) if progress_enabled() else None
    result = run_update(root=root, target=target, overrides=set_, run=run, trials=trials, optimizer=optimizer,
                        rounds=rounds, max_calls=max_calls, seed=seed, yes=yes, force=force, wait=wait, fork=fork,
                        fewshot=fewshot, focus=focus, critique=critique, confirm=confirm,
                        log=log, batch=batch)
    render_result("selfimprove.update/1", result, json_output, render_update)
