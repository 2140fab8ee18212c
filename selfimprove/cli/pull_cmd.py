"""`pull` and `snapshot`: telemetry in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from selfimprove.cli.common import ForceOpt, ForkOpt, JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def pull(
    since: Annotated[str | None, typer.Option(help="Start of the window, inclusive, on span start time: an ISO "
                                                      "date or datetime (no offset = UTC, and the output says so) or "
                                                      "an age such as 7d or 12h. Default: where the last pull ended "
                                                      "(the target's cursor, minus a 10-minute overlap deduplicated "
                                                      "by span id), else the beginning.")] = None,
    until: Annotated[str | None, typer.Option(help="End of the window, exclusive (same forms; default: now, "
                                                      "recorded as a concrete time).")] = None,
    limit: Annotated[int | None, typer.Option(help="Keep only the newest N spans of the window.", min=1)] = None,
    give_up_after: Annotated[float | None, typer.Option(
        "--give-up-after", metavar="SECONDS", min=1,
        help="Give up when Phoenix has not answered a request for this long, retries included (default: "
             "telemetry.phoenix.give_up_after_s, 300; each attempt waits at most telemetry.phoenix.timeout_s, "
             "120).")] = None,
    source: Annotated[str | None, typer.Option(help="phoenix, arize or file (default: telemetry.source in the "
                                                       "config; the file source reads telemetry.file.path).")] = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Pull the target's spans and eval annotations into a new run: raw/spans.parquet, raw/annotations.parquet.

    Exit 2 when the window holds no spans; exit 1 when the server cannot be reached or does not answer within
    --give-up-after seconds. No run is left behind by a pull that fails."""
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.pull import render_pull
    from selfimprove.stages.pull import pull as run_pull

    overrides = [*(set_ or []), *([f"telemetry.phoenix.give_up_after_s={give_up_after}"] if give_up_after else [])]
    with _progress() as on_progress:
        result = run_pull(root=root, target=target, overrides=overrides, since=since, until=until, limit=limit,
                          source=source, wait=wait, on_progress=on_progress)
    render_result("selfimprove.pull/1", result, json_output, render_pull)


@contextmanager
def _progress() -> Iterator[Callable[[Any], None] | None]:
    """A Rich progress display on stderr when it is a terminal; None (no display) otherwise."""
    from selfimprove.cli.output import console, progress_enabled

    if not progress_enabled():
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console(),
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(p: Any) -> None:
            if p.kind == "waiting":  # what the source waits for, timed from when it started waiting
                if "waiting" not in tasks:
                    tasks["waiting"] = bar.add_task(p.note, total=None)
                bar.reset(tasks["waiting"], description=p.note, visible=True)
                return
            if "waiting" in tasks:
                bar.update(tasks["waiting"], visible=False)
            if p.kind not in tasks:
                tasks[p.kind] = bar.add_task(p.kind, total=p.total)
            total = f"/{p.total}" if p.total else ""
            bar.update(tasks[p.kind], completed=p.done, total=p.total,
                       description=f"{p.kind}: {p.done}{total} ({p.requests} requests)")

        yield update


@handle_errors
def snapshot(
    test_size: Annotated[float | None, typer.Option(help="Held-out share of samples, split by whole traces and "
                                                            "stratified by the primary eval's score (default: "
                                                            "split.test_size, 0.3).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split and sampling (default: split.seed).")] = None,
    max_samples: Annotated[int | None, typer.Option(help="Keep at most this many samples (a seeded random "
                                                            "subset, or a varied one with --diverse).", min=1)] = None,
    diverse: Annotated[bool, typer.Option("--diverse", help="With --max-samples, pick a maximally varied subset: "
                                                            "vectors of the inputs, k-means++ clusters, the sample "
                                                            "nearest each centre. Embeddings from [split.embeddings] "
                                                            "when configured (cached in the run), else TF-IDF "
                                                            "(offline); a failing endpoint falls back to TF-IDF "
                                                            "with a warning.")] = False,
    filter_: Annotated[list[str] | None, typer.Option("--filter", help="Keep samples matching KEY OP VALUE "
                       "(repeatable; added to split.filters in the config). Keys: model, policy (digest prefix), "
                       "since, until, score.EVAL, label.EVAL, metadata.KEY; ops = != < <= > >= ~ (contains). "
                       "E.g. model=gpt-4o-mini, score.correctness<0.5, metadata.tenant=acme.")] = None,
    policy: Annotated[str | None, typer.Option(help="Digest (prefix) of the current policy (default: the "
                                                       "latest seen).")] = None,
    min_policy_samples: Annotated[int | None, typer.Option(help="Warn when the current policy holds fewer samples "
                                                                "than this (default: split.min_policy_samples, 30).",
                                                           min=0)] = None,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    force: ForceOpt = False,
    fork: ForkOpt = False,
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Parse the pulled spans into samples, join the evals, split by trace: dataset.parquet + checkpoint.json.

    Bad spans (error status, no output, unparseable, prompt-template variables missing or malformed) are counted
    by reason in snapshot.md, never fatal; identical inputs keep one sample; human annotations are their own eval
    (human.NAME), and each LLM judge's agreement with them is reported (percent, Cohen's kappa, n). Evals logged
    on a parent span, the trace root or the trace reach the LLM span under them as [join] says; annotations that
    reach none are counted by reason. A prompt template recorded on the spans (openinference
    `using_prompt_template`, or `selfimprove.tag_policy`) is the policy's prompt, and each sample keeps its
    variables. Every policy seen is listed (digest, samples, first and last call, the current one). Exit 2 when no
    sample is usable."""
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.snapshot import render_snapshot
    from selfimprove.stages.snapshot import snapshot as run_snapshot

    if min_policy_samples is not None:
        set_ = [*(set_ or []), f"split.min_policy_samples={min_policy_samples}"]
    result = run_snapshot(root=root, target=target, overrides=set_, run=run, test_size=test_size, seed=seed,
                          max_samples=max_samples, diverse=diverse, filters=filter_ or [], policy=policy,
                          force=force, wait=wait, fork=fork)
    render_result("selfimprove.snapshot/1", result, json_output, render_snapshot)
