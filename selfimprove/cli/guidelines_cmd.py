"""`guidelines`: each line of the target's prompts, where it came from, and (measured by ablation) whether it did
any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt, YesOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def guidelines(
    ablate: Annotated[bool, typer.Option(
        "--ablate", help="Measure each guideline the build added to its parent: one experiment per line, the build "
        "without it against the build, on the run's held-out split, at alpha / lines. The worst-case cost is "
        "printed first.")] = False,
    build: Annotated[str | None, typer.Option(help="The build to ablate (default: production).")] = None,
    n: Annotated[int | None, typer.Option(help="Ablate on at most this many held-out samples.", min=1)] = None,
    max_calls: Annotated[int | None, typer.Option(
        help="The ablation's budget in LLM calls (default: evaluate.max_calls).", min=1)] = None,
    max_usd: Annotated[float | None, typer.Option(
        help="The ablation's budget in US dollars (default: evaluate.max_usd).", min=0.0)] = None,
    concurrency: Annotated[int | None, typer.Option(help="Parallel LLM calls (default: config).", min=1)] = None,
    yes: YesOpt = False,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """List the target's guidelines (its prompts' instruction lines, each with a content id): the build each first
    appeared in, the builds that carry it, and its measured impact (a recorded experiment that added just that
    line). With --ablate, measure the lines a build added first: which did the work, which had no measurable
    effect (candidates for removal)."""
    from selfimprove.cli.output import asker, console, emit
    from selfimprove.cli.views.guidelines import render_estimate, render_guidelines
    from selfimprove.stages.guidelines import guidelines as run_guidelines

    result = run_guidelines(root=root, target=target, overrides=set_, run=run, build=build, ablate=ablate, n=n,
                            max_calls=max_calls, max_usd=max_usd, concurrency=concurrency, yes=yes, wait=wait,
                            on_estimate=lambda est: render_estimate(console(), est), confirm=asker())
    emit("selfimprove.guidelines/1", result.model_dump(mode="json"), json_mode=json_output,
         render=lambda c: render_guidelines(c, result), product=True)
