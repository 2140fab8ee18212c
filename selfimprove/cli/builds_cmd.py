"""`diff` and `show`: look at builds (for people, and for CI with --json and --fail-on-regression)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, SetOpt, TargetOpt, resolve_target
from selfimprove.cli.output import emit, handle_errors


@handle_errors
def diff(
    a: Annotated[str, typer.Argument(help="The old build: v0002, 2, a ref (production) or a build file.")],
    b: Annotated[str, typer.Argument(help="The new build, same forms.")] = "production",
    fail_on_regression: Annotated[bool, typer.Option(
        "--fail-on-regression", help="Exit 3 when B regresses A (an eval's estimated change along the build "
        "chain is below minus its [gate] tolerance, or the change is unknown).")] = False,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Compare two builds: the prompt's unified diff, parameter changes, both builds' evidence and the
    estimated change per eval (the sum of measured gains along the chain from A to B).

    For CI: `selfimprove diff <build on main> production --fail-on-regression --json` exits 3 on a regression.
    """
    from selfimprove.cli.views.builds import render_diff
    from selfimprove.core.errors import GateFailed
    from selfimprove.stages.compare import diff as diff_builds

    name, cfg = resolve_target(root, target, set_)
    gate = cfg.gate if cfg else None
    tolerances = dict(gate.max_regression) if gate else {}
    default = gate.default_max_regression if gate else 0.02
    data = diff_builds(root, name, a, b, tolerances=tolerances, default_tolerance=default)
    emit("selfimprove.diff/1", data, json_mode=json_output, render=lambda c: render_diff(c, data), product=True)
    if fail_on_regression and data["regresses"]:
        raise GateFailed(f"{data['b']['name']} regresses {data['a']['name']}", reasons=data["reasons"],
                         hint="promote a better candidate, or roll back with `selfimprove promote --to`")


@handle_errors
def show(
    build: Annotated[str, typer.Argument(help="A build (v0002, 2), a ref (production) or a build file.")] = "production",
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Show one build: its policy, parent, run and the evidence that promoted it."""
    from selfimprove.cli.views.builds import render_show
    from selfimprove.stages.compare import show as show_build

    name, _ = resolve_target(root, target, set_)
    data = show_build(root, name, build)
    emit("selfimprove.show/1", data, json_mode=json_output, render=lambda c: render_show(c, data), product=True)
