"""Which policies are worth keeping (the Pareto front) and which samples are worth spending on (task clustering)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Direction = Literal["maximize", "minimize"]
SampleClass = Literal["trivial", "discriminative", "challenging"]


def pareto_front(
    points: Sequence[tuple[str, Mapping[str, float], Mapping[str, Direction]]],
) -> list[str]:
    """Ids of the non-dominated points, in input order.

    Each point is `(id, objectives, directions)`, e.g. `("cand-1", {"correctness": 0.8, "cost": 0.02},
    {"correctness": "maximize", "cost": "minimize"})`. Every point must name the same objectives with the
    same directions. A point is dominated when another is at least as good on every objective and strictly
    better on one; equal points do not dominate each other, so both stay on the front.
    """
    if not points:
        return []
    _, first_obj, first_dir = points[0]
    names = sorted(first_obj)
    if set(first_dir) != set(names) or any(v not in ("maximize", "minimize") for v in first_dir.values()):
        raise ValueError(f"directions {dict(first_dir)} must give 'maximize' or 'minimize' for each of {names}")
    ids = [p[0] for p in points]
    if len(set(ids)) != len(ids):
        raise ValueError("pareto_front needs distinct ids")
    oriented: list[tuple[float, ...]] = []  # larger is better on every axis
    for pid, objectives, directions in points:
        if sorted(objectives) != names or dict(directions) != dict(first_dir):
            raise ValueError(f"point {pid!r} must have the same objectives and directions as {ids[0]!r}")
        oriented.append(tuple(objectives[n] if first_dir[n] == "maximize" else -objectives[n] for n in names))

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [pid for pid, p in zip(ids, oriented) if not any(dominates(q, p) for q in oriented)]


def classify_samples(
    score_matrix: Mapping[str, Mapping[str, float | None]], *, success_at: float = 0.5
) -> dict[str, SampleClass]:
    """Tag each sample by how the policies seen so far did on it (the seeds' task clustering).

    `score_matrix[sample_id][policy_id]` is a score in [0, 1] (None for a missing score, which is ignored).
    A policy succeeds on a sample when its score >= `success_at`. trivial: every policy succeeds;
    challenging: every policy fails; discriminative: they differ — the only samples where a paired
    comparison can change its mind, so `--focus discriminative` spends the budget there. With one policy a
    sample is trivial or challenging. Samples with no score at all are left out of the result.
    """
    out: dict[str, SampleClass] = {}
    for sample_id, by_policy in score_matrix.items():
        successes = {float(s) >= success_at for s in by_policy.values() if s is not None and not math.isnan(s)}
        if not successes:
            continue
        if successes == {True}:
            out[sample_id] = "trivial"
        elif successes == {False}:
            out[sample_id] = "challenging"
        else:
            out[sample_id] = "discriminative"
    return out
