"""`export`: a run's samples and results as CSV, JSONL or parquet; fine-tuning data in the OpenAI formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def export(
    kind: Annotated[str, typer.Argument(
        help="dataset (the run's samples), results (evaluate's or an experiment's replayed rows), sft (OpenAI chat "
             "fine-tuning JSONL from the best-scoring samples) or preferences (OpenAI preference pairs JSONL from "
             "paired held-out results whose scores differ).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write (its suffix gives the format).")],
    format_: Annotated[str | None, typer.Option("--format", help="csv, jsonl or parquet (default: from --out).")] = None,
    experiment: Annotated[str | None, typer.Option(
        help="Take results from this experiment (an id from `selfimprove experiments`) instead of evaluate's.")] = None,
    split: Annotated[str, typer.Option(help="train, test or all (dataset and sft).")] = "all",
    source: Annotated[str, typer.Option(
        help="sft: production (the calls as production made them), replayed (the replayed answers) or both.")
    ] = "production",
    min_score: Annotated[float, typer.Option(
        help="sft: the least normalised primary-eval score (0-1, 1 best) a sample needs.", min=0.0, max=1.0)] = 1.0,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Write a run's data to a file other tools read; the run itself is only read."""
    from pydantic import ValidationError

    from selfimprove.cli.output import emit
    from selfimprove.core.errors import UsageError
    from selfimprove.stages.export import ExportOptions
    from selfimprove.stages.export import export as run_export

    try:
        options = ExportOptions(kind=kind, out=out, format=format_, experiment=experiment, split=split,
                                source=source, min_score=min_score)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"export: {bad}", hint="see `selfimprove export --help`") from None
    result = run_export(root=root, target=target, overrides=set_, run=run, options=options)

    def draw(console) -> None:
        skipped = "".join(f"; skipped {n} {why}" for why, n in result.skipped.items())
        console.print(f"wrote {result.rows} {result.kind} row(s) of run {result.run} to {result.path} "
                      f"({result.format}){skipped}")

    emit("selfimprove.export/1", result.model_dump(mode="json"), json_mode=json_output, render=draw)
