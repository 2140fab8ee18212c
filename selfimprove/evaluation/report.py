"""From scored rows to the report document (selfimprove.core.report.Report): paired statistics per eval, cost,
Pareto, best (its terminal view is selfimprove.cli.views.evaluate).

Rows are the dicts of `results.parquet` (see selfimprove.evaluation.replay.RESULT_COLUMNS): one per sample × policy
× eval, the policy named by `policy` ("baseline" or a candidate id). Comparisons are paired on sample id, in the
order the samples were evaluated (the SPRT's order). Statistics come from selfimprove.core.stats; nothing here
does I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfimprove.core.records import EvalSpec
from selfimprove.core.scores import normalize

BASELINE = "baseline"


def score_index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], float | None]:
    """(policy, eval, sample_id) -> score (None for a failed or missing verdict)."""
    out: dict[tuple[str, str, str], float | None] = {}
    for r in rows:
        s = r.get("score")
        out[(r["policy"], r["eval"], r["sample_id"])] = None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)
    return out


def eval_entry(spec: EvalSpec, base: Sequence[float | None], cand: Sequence[float | None],
               clusters: Sequence[str], *, test: dict[str, Any] | None, n_resamples: int, seed: int) -> dict[str, Any]:
    """One eval's paired comparison (report.json's `evals.<name>`), on normalised scores (core.scores): means,
    the mean difference with its cluster-bootstrap CI, n, clusters, the pairs dropped for a missing score,
    wins/ties/losses, the cluster-robust p of "it dropped" (the gate's regression check) and, for the primary
    eval, `test` (the decision test; see `primary_test`). `clusters` gives each position's cluster."""
    from selfimprove.core.stats.clustered import ClusteredMean, cluster_bootstrap

    pairs = [(normalize(b, spec), normalize(c, spec), k) for b, c, k in zip(base, cand, clusters)]
    kept = [(b, c, k) for b, c, k in pairs if b is not None and c is not None]
    out: dict[str, Any] = {"scale": "normalized", "direction": spec.direction, "n": len(kept),
                           "n_dropped": len(pairs) - len(kept)}
    if not kept:
        return {**out, "clusters": 0, "baseline_mean": None, "candidate_mean": None, "diff": None, "ci": None,
                "se": None, "wins": 0, "ties": 0, "losses": 0, "p_regression": None,
                **({"test": test} if test is not None else {})}
    d = [c - b for b, c, _ in kept]
    ks = [k for _, _, k in kept]
    ci = cluster_bootstrap(d, ks, n_resamples=n_resamples, seed=seed)
    cm = ClusteredMean(d, ks)
    out.update({
        "clusters": cm.clusters, "baseline_mean": _r(statistics.fmean(b for b, _, _ in kept)),
        "candidate_mean": _r(statistics.fmean(c for _, c, _ in kept)), "diff": _r(ci.mean_diff),
        "ci": [_r(ci.low), _r(ci.high)], "se": _r(cm.se) if math.isfinite(cm.se) else None,
        "wins": sum(x > 0 for x in d), "ties": sum(x == 0 for x in d), "losses": sum(x < 0 for x in d),
        "p_regression": _r(cm.p_below(0.0)),
    })
    if test is not None:
        out["test"] = test
    return out


def primary_test(spec: EvalSpec, base: Sequence[float | None], cand: Sequence[float | None],
                 clusters: Sequence[str], *, level: float, beta: float, min_effect: float,
                 seed: int, n_available: int | None = None, clusters_available: int | None = None) -> dict[str, Any]:
    """The decision test on the primary eval's complete pairs, in evaluation order: what it decided, when and
    why it stopped, its p-value, and the effect corrected for early stopping."""
    from selfimprove.core.stats.sequential import sequential_test

    kept = [(nc - nb, k) for b, c, k in zip(base, cand, clusters)
            if (nb := normalize(b, spec)) is not None and (nc := normalize(c, spec)) is not None]
    res = sequential_test([d for d, _ in kept], [k for _, k in kept], level=level, beta=beta,
                          min_effect=min_effect, seed=seed, n_available=n_available,
                          clusters_available=clusters_available)
    out = res.model_dump()
    for key in ("p_value", "llr", "estimate", "estimate_corrected"):
        out[key] = _r(out[key])
    return {**out, "reason": res.reason()}


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def generation_rows(rows: Iterable[Mapping[str, Any]], policy: str, sample_ids: set[str]) -> list[Mapping[str, Any]]:
    """One row per sample (the generation facts repeat across evals) for `policy`, limited to `sample_ids`."""
    seen: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r["policy"] == policy and r["sample_id"] in sample_ids and r["sample_id"] not in seen:
            seen[r["sample_id"]] = r
    return list(seen.values())


def cost_summary(gen: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-call cost, tokens and median latency of a policy's task calls (successful ones only)."""
    ok = [g for g in gen if not g.get("gen_error")]
    if not ok:
        return {"per_call_usd": None, "tokens_per_call": None, "latency_ms_p50": None}
    lat = [float(g["gen_latency_ms"]) for g in ok if g.get("gen_latency_ms") is not None]
    return {"per_call_usd": _r(statistics.fmean(float(g.get("gen_cost_usd") or 0.0) for g in ok), 9),
            "tokens_per_call": _r(statistics.fmean(float(g.get("gen_tokens") or 0) for g in ok), 2),
            "latency_ms_p50": _r(statistics.median(lat), 2) if lat else None}


def error_counts(rows: Iterable[Mapping[str, Any]], policy: str, sample_ids: set[str]) -> dict[str, int]:
    gen = sum(1 for g in generation_rows(rows, policy, sample_ids) if g.get("gen_error"))
    judged = sum(1 for r in rows if r["policy"] == policy and r["sample_id"] in sample_ids
                 and not r.get("gen_error") and r.get("error"))
    return {"generation": gen, "judgement": judged}


def pareto_flags(points: list[tuple[str, dict[str, float | None], float | None]],
                 evals: Sequence[EvalSpec]) -> tuple[dict[str, bool], dict[str, list[str]]]:
    """(on the joint front over every eval and cost, the evals on whose (eval, cost) front each point lies).

    `points` are (id, {eval: mean}, cost per call); a point with a missing value is left off that front.
    """
    from selfimprove.core.stats import pareto_front

    def front(names: list[str]) -> set[str]:
        pts = []
        for pid, means, cost in points:
            if cost is None or any(means.get(n) is None for n in names):
                continue
            obj = {f"e:{n}": float(means[n]) for n in names}
            obj["cost"] = float(cost)
            dirs = {f"e:{n}": "maximize" for n in names}  # normalised means: 1 is best for every eval
            dirs["cost"] = "minimize"
            pts.append((pid, obj, dirs))
        return set(pareto_front(pts))

    names = [s.name for s in evals]
    joint = front(names)
    per_eval = {pid: [n for n in names if pid in front([n])] for pid, _, _ in points}
    return {pid: pid in joint for pid, _, _ in points}, per_eval


def choose_best(entries: Sequence[Mapping[str, Any]], gate_settings: Any) -> str | None:
    """The candidate with the largest primary gain among those that pass the gate (None if none does)."""
    from selfimprove.core.gate import decide, directed

    passing = []
    for e in entries:
        if decide(e, gate_settings).passed:
            gain, ci = directed((e.get("evals") or {}).get(gate_settings.primary_eval) or {})
            passing.append((gain or 0.0, ci[0] if ci else 0.0, e["id"]))
    return max(passing)[2] if passing else None


def decision_summary(entry: Mapping[str, Any], gate_settings: Any) -> dict[str, Any]:
    """What the gate decided for one candidate and on what evidence: n, clusters, the test, its p before and
    after correction, the level, when and why the test stopped, the corrected effect, every reason."""
    from selfimprove.core.gate import decide

    d = decide(entry, gate_settings)
    primary = next((c for c in d.checks if c.role == "primary"), None)
    ev = (entry.get("evals") or {}).get(gate_settings.primary_eval) or {}
    test = ev.get("test") or {}
    return {"passed": d.passed, "test": test.get("test"), "stop": test.get("stop"), "reason": test.get("reason"),
            "n": test.get("n_used"), "n_available": test.get("n_available"), "clusters": test.get("clusters_used"),
            "clusters_available": test.get("clusters_available"), "p_value": test.get("p_value"),
            "p_adjusted": None if primary is None or primary.p_adjusted is None else _r(primary.p_adjusted),
            "level": None if primary is None or primary.level is None else _r(primary.level, 8),
            "estimate": test.get("estimate"), "estimate_corrected": test.get("estimate_corrected"),
            "n_dropped": ev.get("n_dropped"), "reasons": list(d.reasons), "warnings": list(d.warnings)}


def verdicts(entry: Mapping[str, Any], gate_settings: Any) -> dict[str, str]:
    """The gate's per-eval verdict ("improved", "not significant", "ok", "regressed", ...) for the table."""
    from selfimprove.core.gate import decide

    return {c.eval: c.verdict for c in decide(entry, gate_settings).checks}


def label_agreement(rows: Iterable[Mapping[str, Any]], policy: str, sample_ids: set[str],
                    specs: Sequence[EvalSpec]) -> dict[str, dict[str, Any]]:
    """Per label-only eval: on the samples where both the baseline and `policy` got a label, how often they agree,
    and each side's label counts (a label-only eval has no score, so no mean, CI or gate)."""
    labels: dict[tuple[str, str, str], str] = {}
    names = {s.name for s in specs}
    for r in rows:
        if r["eval"] in names and r["sample_id"] in sample_ids and r.get("label") is not None and not r.get("error"):
            labels[(r["policy"], r["eval"], r["sample_id"])] = str(r["label"])
    out = {}
    for spec in specs:
        pairs = [(labels[(BASELINE, spec.name, sid)], labels[(policy, spec.name, sid)]) for sid in sorted(sample_ids)
                 if (BASELINE, spec.name, sid) in labels and (policy, spec.name, sid) in labels]
        agree = sum(1 for b, c in pairs if b == c)
        out[spec.name] = {"n": len(pairs), "agree": agree, "disagree": len(pairs) - agree,
                          "baseline": {k: sum(1 for b, _ in pairs if b == k) for k in spec.rails},
                          "candidate": {k: sum(1 for _, c in pairs if c == k) for k in spec.rails}}
    return out

