"""The statistical design of one evaluation: the level each test runs at, which look at a comparison this is,
and whether the held-out set can reach the power the minimum effect needs (docs/statistics.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from selfimprove.core.records import EvalSpec, Sample


def test_level(alpha: float, candidates: int, looks: int) -> float:
    """The level each candidate's sequential test runs at: alpha shared by the candidates (the first Holm step)
    and the planned looks (core.stats.multiple)."""
    return alpha / (max(1, candidates) * max(1, looks))


def prior_looks(ws: Any, target: str, run: Any, baseline_digest: str, candidate_digests: Sequence[str],
                dataset_digest: str | None = None) -> int:
    """Which look at these comparisons this evaluation is: 1 + the most other data sets on which a run of the
    target compared one of these candidates with the same baseline (the alpha-spending count,
    core.stats.multiple). A report on the same data set (`dataset_digest`: a fork or re-run of the same
    snapshot) is the same look, not another: the same samples cannot give a new chance of a false promotion."""
    wanted = set(candidate_digests)
    seen: dict[str, set[str]] = {}
    for other in ws.runs(target):
        if other.run_id == run.run_id:
            continue
        for path in [other.path / "report.json", *sorted(other.path.glob("experiments/*/report.json"))]:
            _count_look(path, other.run_id, baseline_digest, wanted, dataset_digest, seen)
    return 1 + max((len(d) for d in seen.values()), default=0)


def _count_look(path: Any, run_id: str, baseline_digest: str, wanted: set[str], dataset_digest: str | None,
                seen: dict[str, set[str]]) -> None:
    """Add the data set of the report at `path` (evaluate's, or an experiment's) to `seen[candidate digest]`."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or unreadable: no look to count
        return
    if (report.get("baseline") or {}).get("policy_digest") != baseline_digest:
        return
    data = (report.get("inputs") or {}).get("dataset") or run_id
    if dataset_digest is not None and data == dataset_digest:
        return
    for c in report.get("candidates") or []:
        if c.get("policy_digest") in wanted:
            seen.setdefault(c["policy_digest"], set()).add(data)


def power_check(order: Sequence[Sample], clusters: dict[str, str], primary: EvalSpec, ev: Any, candidates: int,
                looks: int) -> tuple[dict[str, Any], str | None]:
    """The power of this evaluation for the configured minimum effect (evaluate.min_effect), from the production
    scores of the held-out samples (baseline rate, ICC) and their clusters; a warning below 80%."""
    import math
    import statistics

    from selfimprove.core.scores import normalize
    from selfimprove.core.stats.clustered import icc_anova
    from selfimprove.core.stats.power import achieved_power, diff_sd, plan_fixed

    if not order:
        return {}, None
    scored = [(v, clusters[s.sample_id]) for s in order if s.evals.get(primary.name) is not None
              and (v := normalize(s.evals[primary.name].score, primary)) is not None]
    p0 = statistics.fmean(v for v, _ in scored) if scored else 0.5
    p0 = min(max(p0, 0.0), 1.0 - ev.min_effect)
    n_clusters = len({clusters[s.sample_id] for s in order})
    size = max(1, round(len(order) / n_clusters))
    icc = icc_anova([v for v, _ in scored], [k for _, k in scored]) if size > 1 and len(scored) > 2 else 0.0
    sd = diff_sd(p0, ev.min_effect)
    power = achieved_power(len(order), ev.min_effect, sd, alpha=ev.alpha, cluster_size=size, icc=icc,
                           candidates=candidates, looks=looks, beta=ev.beta, paths=1000)
    need = plan_fixed(ev.min_effect, sd, alpha=ev.alpha, power=0.8, cluster_size=size, icc=icc,
                      candidates=candidates, looks=looks)
    out = {"samples": len(order), "clusters": n_clusters, "cluster_size": size, "icc": round(icc, 3),
           "baseline_rate": round(p0, 3), "min_effect": ev.min_effect, "power": round(power, 3),
           "fixed_n_for_80": need}
    note = None
    if power < 0.8:
        note = (f"the {len(order)} held-out samples ({n_clusters} clusters) give only {power:.0%} power to detect "
                f"the minimum effect {ev.min_effect:g} (baseline {p0:.2f}, ICC {icc:.2f}); a fixed-size test would "
                f"need about {need}: the test will likely end undecided. See `selfimprove power --baseline "
                f"{p0:.2f} --effect {ev.min_effect:g} --cluster-size {size} --icc {icc:.2f}`")
    if not math.isfinite(power):
        out["power"] = None
    return out, note
