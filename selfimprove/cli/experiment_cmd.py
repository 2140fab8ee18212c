"""`experiment` (is my change better? both arms replayed on held-out data, decided by evaluate's statistics and
gate) and `experiments` (the recorded hypotheses with their outcomes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import ForceOpt, JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt, YesOpt
from selfimprove.cli.output import handle_errors

ArmSetOpt = list[str] | None


@handle_errors
def experiment(
    test: Annotated[str, typer.Option(
        "--test", metavar="FILE|BUILD|CANDIDATE", help="The change to try: a policy file (.toml or .json, the "
        "Policy fields: system_prompt, model, temperature, ...), a build (v0003) or a candidate id of the run.")],
    control: Annotated[str, typer.Option(
        "--control", metavar="production|BUILD|FILE", help="What it must beat: production (the build the "
        "production ref names, else the run's current policy), a build (v0002) or a policy file.")] = "production",
    hypothesis: Annotated[str, typer.Option(help="What you expect and why, in words (kept in the record).")] = "",
    metric: Annotated[str | None, typer.Option(
        help="The eval that decides (default: evals.primary); the others are regression checks.")] = None,
    expected_effect: Annotated[float | None, typer.Option(
        help="The gain on the metric you expect (0-1 on the normalised scale): the effect the sequential test is "
             "planned for (default: evaluate.min_effect).", min=0.0, max=1.0)] = None,
    split: Annotated[str, typer.Option(help="Which samples to replay: test (held out; only this can promote) or "
                                            "train.")] = "test",
    control_set: Annotated[ArmSetOpt, typer.Option(
        "--control-set", metavar="KEY=VALUE", help="Change one field of the control policy (repeatable).")] = None,
    test_set: Annotated[ArmSetOpt, typer.Option(
        "--test-set", metavar="KEY=VALUE", help="Change one field of the test policy, e.g. temperature=0.2 "
        "(repeatable); `--test v0003 --test-set temperature=0.2` is a one-parameter experiment with no file.")] = None,
    n: Annotated[int | None, typer.Option(help="At most this many samples.", min=1)] = None,
    concurrency: Annotated[int | None, typer.Option(help="Parallel LLM calls (default: config).", min=1)] = None,
    phoenix: Annotated[bool | None, typer.Option(
        "--phoenix/--no-phoenix", help="Record the split as a Phoenix dataset and both arms as Phoenix "
        "experiments (default: telemetry.phoenix.experiments, else on for Phoenix sources).")] = None,
    yes: YesOpt = False,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    force: ForceOpt = False,
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Test a hand-written change against production (or any policy) on held-out data: accepted when it passes
    the gate `promote` applies (exit 0), refused otherwise (exit 3). Promote a winner with
    `selfimprove promote --candidate <experiment id>`."""
    from selfimprove.cli.output import asker, emit, evaluate_progress, log_line
    from selfimprove.cli.render import as_dict
    from selfimprove.cli.views.experiments import render_experiment
    from selfimprove.core.errors import GateFailed
    from selfimprove.stages.experiment import ExperimentOptions
    from selfimprove.stages.experiment import experiment as run_experiment

    options = ExperimentOptions(control=control, test=test, hypothesis=hypothesis, metric=metric,
                                expected_effect=expected_effect, split=split, control_set=control_set or [],
                                test_set=test_set or [], n=n, concurrency=concurrency, phoenix=phoenix)
    result = run_experiment(root=root, target=target, overrides=set_, run=run, options=options, yes=yes,
                            force=force, wait=wait, confirm=asker(), log=log_line, progress=evaluate_progress())
    emit("selfimprove.experiment/1", as_dict(result), json_mode=json_output,
         render=lambda console: render_experiment(console, result))
    if result.result.outcome != "accepted":
        raise GateFailed(f"experiment {result.hypothesis.id} refused: the test arm did not earn promotion",
                         reasons=list(result.result.reasons),
                         hint=f"see {result.run}/{result.result.report.replace('.json', '.html')}")


@handle_errors
def experiments(
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """List the recorded experiments of the target: hypothesis, arms, metric, outcome and evidence."""
    from selfimprove.cli.output import emit
    from selfimprove.stages.experiments import list_experiments

    found = list_experiments(root=root, target=target, overrides=set_)
    data = {"experiments": [e.model_dump(mode="json") for e in found]}

    def draw(console) -> None:
        from selfimprove.cli.views.experiments import render_experiments

        render_experiments(console, found)

    emit("selfimprove.experiments/1", data, json_mode=json_output, render=draw, product=True)
