"""`pull` and `snapshot`: telemetry in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from selfimprove.cli.common import ForceOpt, JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def pull(
    since: Annotated[Optional[str], typer.Option(help="Start of the window (ISO date or datetime; naive = UTC). "
                                                      "Default: where the last pull ended (the target's cursor).")] = None,
    until: Annotated[Optional[str], typer.Option(help="End of the window, exclusive (default: now).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Stop after this many spans.", min=1)] = None,
    source: Annotated[Optional[str], typer.Option(help="phoenix, arize or file (default: from the config).")] = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Pull the target's spans and eval annotations into a new run: raw/spans.parquet, raw/annotations.parquet."""
    from selfimprove.cli.render import render_result
    from selfimprove.stages.pull import pull as run_pull

    result = run_pull(root=root, target=target, overrides=set_, since=since, until=until, limit=limit,
                      source=source, wait=wait)
    render_result("selfimprove.pull/1", result, json_output)


@handle_errors
def snapshot(
    test_size: Annotated[Optional[float], typer.Option(help="Held-out share of traces (default: config, 0.3).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the split and sampling.")] = None,
    max_samples: Annotated[Optional[int], typer.Option(help="Keep at most this many samples.", min=1)] = None,
    diverse: Annotated[bool, typer.Option("--diverse", help="Pick a maximally varied subset (clustered "
                                                            "embeddings, or TF-IDF offline).")] = False,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", help="Keep samples matching, e.g. "
                       "model=gpt-4o-mini, policy=sha256:…, since=2024-05-01, score.correctness<0.5 (repeatable).")] = None,
    policy: Annotated[Optional[str], typer.Option(help="Digest (prefix) of the current policy (default: the "
                                                       "latest seen).")] = None,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    force: ForceOpt = False,
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Parse the pulled spans into samples, join the evals, split by trace: dataset.parquet + checkpoint.json."""
    from selfimprove.cli.render import render_result
    from selfimprove.stages.snapshot import snapshot as run_snapshot

    result = run_snapshot(root=root, target=target, overrides=set_, run=run, test_size=test_size, seed=seed,
                          max_samples=max_samples, diverse=diverse, filters=filter_ or [], policy=policy,
                          force=force, wait=wait)
    render_result("selfimprove.snapshot/1", result, json_output)
