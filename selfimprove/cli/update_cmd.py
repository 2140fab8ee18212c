"""`update`: learn candidate policies from the judges' feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from selfimprove.cli.common import ForceOpt, JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def update(
    trials: Annotated[Optional[int], typer.Option(help="Updates on different minibatches, merged into one "
                                                       "candidate (default: config, 3).", min=1)] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="builtin (textual gradient) or gepa.")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Search rounds over the candidate population.", min=1)] = None,
    max_calls: Annotated[Optional[int], typer.Option(help="LLM-call budget of this update.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed for minibatches and search.")] = 0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending (for cron).")] = False,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    force: ForceOpt = False,
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Propose better policies from the checkpoint's failures and the judges' explanations: candidates/."""
    from selfimprove.cli.render import render_result
    from selfimprove.stages.update import update as run_update

    result = run_update(root=root, target=target, overrides=set_, run=run, trials=trials, optimizer=optimizer,
                        rounds=rounds, max_calls=max_calls, seed=seed, yes=yes, force=force, wait=wait)
    render_result("selfimprove.update/1", result, json_output)
