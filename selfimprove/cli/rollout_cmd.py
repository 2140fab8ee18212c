"""`rollout start | status | stop`: a build on a share of production traffic, judged online."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, SetOpt, TargetOpt, WaitOpt
from selfimprove.cli.output import emit, handle_errors

SCHEMA = "selfimprove.rollout/1"
PushOpt = Annotated[bool, typer.Option("--push-phoenix", help="Also push the build to Phoenix prompts and move "
                                                              "its tag (challenger on start, production on "
                                                              "promotion).")]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Serve a build to a share of production traffic (through `load_policy`), measure it "
                  "online, then promote it or roll it back without a human.")


@app.command("start")
@handle_errors
def start(
    challenger: Annotated[str, typer.Option("--challenger", help="The build to prove online, e.g. v0003. When it "
                                                                 "is production, its parent serves as champion.")],
    share: Annotated[float | None, typer.Option(help="Fixed share of traffic for the challenger (default 0.1).",
                                                min=0, max=1)] = None,
    bandit: Annotated[str | None, typer.Option(help="Let the online evidence move the shares: thompson or ucb "
                                                    "(instead of --share).")] = None,
    key_field: Annotated[str | None, typer.Option(help="The call attribute that keys a sticky assignment (e.g. "
                                                       "user_id); the app passes its value as load_policy(key=...).")
                         ] = None,
    push_phoenix: PushOpt = False,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Start a rollout: the challenger gets its share of the calls `load_policy` serves; production stays the
    champion. Recorded as a new revision of prompts/<target>/rollout.json (and rollouts.jsonl)."""
    from selfimprove.stages.rollout import start_rollout

    result = start_rollout(root=root, target=target, overrides=set_, challenger=challenger, share=share,
                           bandit=bandit, key_field=key_field, push_phoenix=push_phoenix, wait=wait)
    _render(result, json_output)


@app.command("status")
@handle_errors
def status(
    pull: Annotated[bool, typer.Option("--pull/--no-pull", help="Pull new spans and annotations first.")] = True,
    apply: Annotated[bool, typer.Option("--apply/--no-apply", help="Act on the decision (promote, roll back, new "
                                                                   "bandit shares); --no-apply only reports it.")
                     ] = True,
    push_phoenix: PushOpt = False,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Each arm's online primary score (95% interval, clustered by key) and the decision: promote the challenger
    when it gains at least gate.min_improvement significantly (evaluate.alpha) with rollout.min_samples judged
    calls per arm, roll back when it is significantly worse, else continue (a bandit's shares move).

    Exit codes: 0 (continue, promoted or inactive); 3 the challenger was rolled back; 1/2/4 as for every command.
    """
    from selfimprove.cli.pull_cmd import _progress
    from selfimprove.stages.rollout import rollout_status

    with _progress() as on_progress:
        result = rollout_status(root=root, target=target, overrides=set_, pull=pull, apply=apply,
                                push_phoenix=push_phoenix, wait=wait, on_progress=on_progress)
    _render(result, json_output)
    if result.action == "rolled back":
        raise typer.Exit(3)


@app.command("stop")
@handle_errors
def stop(
    reason: Annotated[str, typer.Option(help="Why, for the rollout log.")] = "",
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """End the active rollout; production stays the champion (`promote --to` moves it by hand)."""
    from selfimprove.stages.rollout import stop_rollout

    _render(stop_rollout(root=root, target=target, overrides=set_, reason=reason, wait=wait), json_output)


def _render(result, json_output: bool) -> None:
    from selfimprove.cli.views.rollout import render_rollout

    emit(SCHEMA, result.model_dump(mode="json"), json_mode=json_output, render=lambda c: render_rollout(c, result),
         product=True)
