"""`promote`: the gate, and versioned prompt builds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, RunOpt, SetOpt, TargetOpt, WaitOpt, gate_overrides
from selfimprove.cli.output import handle_errors


@handle_errors
def promote(
    candidate: Annotated[str | None, typer.Option(help="Candidate id (default: the report's best).")] = None,
    min_improvement: Annotated[float | None, typer.Option(help="Required gain on the primary eval "
                                                                  "(default: config gate.min_improvement).")] = None,
    max_failed_pairs: Annotated[float | None, typer.Option(
        min=0, max=1, help="Refuse when more than this share of the held-out pairs was lost to failed calls "
                           "(default: config gate.max_failed_pairs, 0.05).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the gate; write and move nothing.")] = False,
    push_phoenix: Annotated[bool, typer.Option("--push-phoenix", help="Also create a Phoenix prompt version "
                                                                      "and move its production tag.")] = False,
    to: Annotated[str | None, typer.Option("--to", help="Roll the production ref back (or forward) to this "
                                                           "build, e.g. v0002.")] = None,
    run: RunOpt = None,
    target: TargetOpt = None,
    set_: SetOpt = None,
    root: RootOpt = Path("."),
    wait: WaitOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Promote a candidate that passes the gate to a new build and move the production ref (exit 3 if not).

    The gate: the primary eval gains at least --min-improvement (corrected for early stopping) and its decision
    test is significant (p, Holm-adjusted over the candidates compared, within this look's alpha); no eval drops
    beyond its tolerance significantly (Holm over the regression checks); cost per call within the ceiling; the
    guards passed; at most --max-failed-pairs of the pairs lost to failed calls. See docs/statistics.md. The first
    promotion of a target also records the baseline as v0001.
    """
    from selfimprove.cli.render import render_result
    from selfimprove.cli.views.builds import render_promotion
    from selfimprove.core.errors import GateFailed
    from selfimprove.stages.promote import promote as run_promote

    try:
        result = run_promote(root=root, target=target, overrides=gate_overrides(set_, max_failed_pairs), run=run, candidate=candidate,
                             min_improvement=min_improvement, dry_run=dry_run, push_phoenix=push_phoenix, to=to,
                             wait=wait)
    except GateFailed as exc:
        refused = exc.result
        if refused is not None:  # the decision, for people and for scripts, before the exit-3 error
            render_result("selfimprove.promote/1", refused, json_output, render_promotion)
        raise
    render_result("selfimprove.promote/1", result, json_output, render_promotion)
