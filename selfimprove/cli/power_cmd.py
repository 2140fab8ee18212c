"""`power`: how many held-out samples a comparison needs, before spending on it."""

from __future__ import annotations

from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt
from selfimprove.cli.output import handle_errors


@handle_errors
def power(
    effect: Annotated[float, typer.Option(help="The smallest gain worth detecting, on the normalised [0, 1] scale "
                                               "(set evaluate.min_effect to it).")],
    baseline: Annotated[float | None, typer.Option(help="The current policy's success rate on the primary eval "
                                                         "(binary scores), e.g. 0.6.")] = None,
    sd: Annotated[float | None, typer.Option("--sd", help="Instead of --baseline: the SD of one paired "
                                                          "difference (candidate - baseline), e.g. from a report.")] = None,
    cluster_size: Annotated[int, typer.Option(help="Samples per cluster (turns per trace or session).", min=1)] = 1,
    icc: Annotated[float, typer.Option(help="Intra-cluster correlation of the paired differences.", min=0,
                                       max=1)] = 0.0,
    alpha: Annotated[float, typer.Option(help="False-promotion rate (evaluate.alpha).")] = 0.05,
    target_power: Annotated[float, typer.Option("--power", help="The power to reach.")] = 0.9,
    beta: Annotated[float, typer.Option(help="The sequential test's futility error (evaluate.beta).")] = 0.05,
    candidates: Annotated[int, typer.Option(help="Candidates compared on the same samples (Holm).", min=1)] = 1,
    looks: Annotated[int, typer.Option(help="Planned looks at one comparison (gate.looks).", min=1)] = 1,
    judge_votes: Annotated[int, typer.Option(help="Judge verdicts averaged per sample (k votes).", min=1)] = 1,
    judge_flip: Annotated[float, typer.Option(help="Chance that one judge verdict is flipped (judge noise).",
                                              min=0, max=0.49)] = 0.0,
    json_output: JsonOpt = False,
) -> None:
    """Samples needed to detect --effect: the fixed-size test's n and the sequential test's (the one evaluate
    runs, truncated at the held-out size), with its expected samples under the effect and under none.

    Clusters inflate the need by the design effect 1 + (m - 1) ICC; a noisy judge shrinks the visible effect and
    adds variance, which k votes per sample reduce; alpha is shared by the candidates and the planned looks.
    """
    from selfimprove.cli.output import emit
    from selfimprove.core.errors import UsageError
    from selfimprove.core.stats.power import plan

    if (baseline is None) == (sd is None):
        raise UsageError("give exactly one of --baseline (a success rate) or --sd (of a paired difference)",
                         hint="e.g. selfimprove power --baseline 0.6 --effect 0.1")
    try:
        result = plan(effect, baseline=baseline, sd_diff=sd, alpha=alpha, power=target_power, beta=beta,
                      cluster_size=cluster_size, icc=icc, candidates=candidates, looks=looks,
                      judge_votes=judge_votes, judge_flip=judge_flip)
    except ValueError as exc:
        raise UsageError(str(exc), hint="check the rates: baseline + effect must stay within [0, 1]") from None
    data = result.model_dump(by_alias=True, exclude={"schema_"})
    clean = None
    if judge_flip > 0 and baseline is not None:
        clean = plan(effect, baseline=baseline, alpha=alpha, power=target_power, beta=beta,
                     cluster_size=cluster_size, icc=icc, candidates=candidates, looks=looks)
        data["without_judge_noise"] = {"n_fixed": clean.n_fixed, "n_sequential": clean.n_sequential}

    def draw(console) -> None:
        r = result
        console.print(f"to detect {r.effect:g} (visible {r.visible_effect:g}) at alpha {r.alpha:g} "
                      f"(level {r.level:.4g} per test) with power {r.power:.0%}:", highlight=False)
        console.print(f"  fixed-size test: {r.n_fixed} samples", highlight=False)
        console.print(f"  sequential test (evaluate): {r.n_sequential} samples ({r.clusters_sequential} clusters of "
                      f"{r.cluster_size}); it stops on average after {r.expected_h1:g} with the effect, "
                      f"{r.expected_h0:g} without", highlight=False)
        console.print(f"  SD of a paired difference {r.sd_diff:g} · design effect {r.design_effect:g} · "
                      f"judge: {r.judge_votes} vote(s), flip {r.judge_flip:g}", highlight=False)
        if clean is not None:
            console.print(f"  a noiseless judge would need {clean.n_fixed} (fixed) / {clean.n_sequential} "
                          "(sequential)", highlight=False)

    emit("selfimprove.power/1", data, json_mode=json_output, render=draw)
