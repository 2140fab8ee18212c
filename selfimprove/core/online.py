"""Online evidence: each arm's score on judged production calls, the rollout's decision, and the monitor's check.

Pure (numpy/scipy inside the functions). Scores are normalised primary scores (core.scores: [0, 1], 1 best).
Calls of one key (a user or session: the rollout's key field, else the trace) are one cluster: a user who has a
bad time has it on every call, so the standard errors are cluster-robust (core.stats.clustered) and the tests
have clusters - 1 degrees of freedom.

- `arm_evidence` summarises one arm; `online_decision` compares challenger with champion (two independent
  samples: under a keyed rollout a key sees one arm only): **promote** when the challenger has at least
  `min_samples` judged calls on each arm, its gain is at least `min_improvement` and significantly above 0
  (one-sided p <= alpha); **rollback** when it is significantly below the champion (one-sided p <= alpha);
  otherwise **continue**. Every look spends the full alpha (a rollout is looked at many times): `min_samples`
  is what keeps an early, lucky look from deciding.
- `monitor_check`: production's recent mean against the held-out score its build was promoted on; a drop is
  reported when the mean is more than `margin` below the reference and significantly so (one-sided p of
  "mean < reference - margin" <= alpha).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArmEvidence(_Frozen):
    """One arm's judged calls: count, clusters, mean, cluster-robust SE and 95% interval (None without data)."""

    build: str
    n: int = 0
    clusters: int = 0
    mean: float | None = None
    se: float | None = None
    ci: tuple[float, float] | None = None


class OnlineDecision(_Frozen):
    action: Literal["continue", "promote", "rollback"]
    reasons: tuple[str, ...] = ()
    diff: float | None = None  # challenger mean - champion mean
    ci: tuple[float, float] | None = None
    p_better: float | None = None  # one-sided p of "the challenger is not better"
    p_worse: float | None = None  # one-sided p of "the challenger is not worse"
    champion: ArmEvidence
    challenger: ArmEvidence


class MonitorCheck(_Frozen):
    regressed: bool
    reason: str
    reference: float | None = None
    mean: float | None = None
    drop: float | None = None  # reference - mean
    p: float | None = None
    n: int = 0
    clusters: int = 0
    margin: float = 0.0


def _t_sf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.sf(t, df))


def _t_ppf(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def arm_evidence(build: str, scores: Sequence[float], clusters: Sequence[Hashable]) -> ArmEvidence:
    from selfimprove.core.stats.clustered import ClusteredMean

    if not scores:
        return ArmEvidence(build=build)
    cm = ClusteredMean(scores, clusters)
    se = cm.se if math.isfinite(cm.se) else None
    ci = None
    if se is not None:
        half = _t_ppf(0.975, cm.clusters - 1) * se
        ci = (cm.mean - half, cm.mean + half)
    return ArmEvidence(build=build, n=cm.n, clusters=cm.clusters, mean=cm.mean, se=se, ci=ci)


def online_decision(champion: ArmEvidence, challenger: ArmEvidence, *, min_improvement: float, alpha: float,
                    min_samples: int) -> OnlineDecision:
    """Promote, roll back or continue; see the module docstring. Reasons say what is missing."""
    base = {"champion": champion, "challenger": challenger}
    short = [f"{a.build} has {a.n} judged calls, fewer than {min_samples}"
             for a in (champion, challenger) if a.n < min_samples]
    if champion.mean is None or challenger.mean is None or champion.se is None or challenger.se is None:
        return OnlineDecision(action="continue", reasons=tuple(short or ["an arm has fewer than 2 keys judged"]),
                              **base)
    diff = challenger.mean - champion.mean
    se = math.hypot(champion.se, challenger.se)
    df = _welch_df(champion, challenger)
    if se == 0.0:
        p_better = 0.0 if diff > 0 else 1.0
        p_worse = 0.0 if diff < 0 else 1.0
        ci = (diff, diff)
    else:
        p_better, p_worse = _t_sf(diff / se, df), _t_sf(-diff / se, df)
        half = _t_ppf(0.975, df) * se
        ci = (diff - half, diff + half)
    stats = {"diff": diff, "ci": ci, "p_better": p_better, "p_worse": p_worse}
    if short:
        return OnlineDecision(action="continue", reasons=tuple(short), **stats, **base)
    if p_worse <= alpha:
        return OnlineDecision(action="rollback", reasons=(
            f"{challenger.build} scores {diff:+.3f} below {champion.build} (one-sided p {p_worse:.3g} <= {alpha})",),
            **stats, **base)
    if diff >= min_improvement and p_better <= alpha:
        return OnlineDecision(action="promote", reasons=(
            (f"{challenger.build} gains {diff:+.3f} >= {min_improvement} over {champion.build} "
            f"(one-sided p {p_better:.3g} <= {alpha})"),), **stats, **base)
    why = []
    if diff < min_improvement:
        why.append(f"gain {diff:+.3f} is below min_improvement {min_improvement}")
    if p_better > alpha:
        why.append(f"not significant yet (one-sided p {p_better:.3g} > {alpha})")
    return OnlineDecision(action="continue", reasons=tuple(why), **stats, **base)


def _welch_df(a: ArmEvidence, b: ArmEvidence) -> float:
    """Welch-Satterthwaite degrees of freedom with each arm's clusters - 1."""
    va, vb = (a.se or 0.0) ** 2, (b.se or 0.0) ** 2
    da, db = max(a.clusters - 1, 1), max(b.clusters - 1, 1)
    denom = (va**2 / da if va else 0.0) + (vb**2 / db if vb else 0.0)
    return (va + vb) ** 2 / denom if denom > 0 else float(min(da, db))


def monitor_check(scores: Sequence[float], clusters: Sequence[Hashable], reference: float | None, *,
                  margin: float, alpha: float, min_samples: int) -> MonitorCheck:
    """Has production's recent score dropped more than `margin` below `reference`, significantly?"""
    from selfimprove.core.stats.clustered import ClusteredMean

    base = {"reference": reference, "n": len(scores), "margin": margin}
    if reference is None:
        return MonitorCheck(regressed=False, reason="production's build records no held-out score to compare with",
                            **base)
    if len(scores) < min_samples:
        return MonitorCheck(regressed=False, reason=f"{len(scores)} judged calls of production, fewer than "
                            f"{min_samples}", **base)
    cm = ClusteredMean([s - reference for s in scores], clusters)
    mean = cm.mean + reference
    p = cm.p_below(-margin)
    out = {**base, "mean": mean, "drop": reference - mean, "p": p, "clusters": cm.clusters}
    if reference - mean > margin and p <= alpha:
        return MonitorCheck(regressed=True, reason=f"production scores {mean:.3f} online, {reference - mean:.3f} "
                            f"below the {reference:.3f} it was promoted on (margin {margin}, one-sided p {p:.3g} "
                            f"<= {alpha})", **out)
    return MonitorCheck(regressed=False, reason=f"production scores {mean:.3f} online against {reference:.3f} "
                        f"held out (margin {margin}, p {p:.3g})", **out)


def promoted_score(build: Any, builds: Sequence[Any], primary: str) -> float | None:
    """The held-out score (normalised) `build` was promoted on: its own candidate mean on `primary`; for a
    baseline build (recorded, not proved), the baseline mean of the build that was proved against it. None when
    no report in normalised units recorded one."""

    def held(b: Any, which: str) -> float | None:
        ev = ((b.evidence or {}).get("evals") or {}).get(primary) or {}
        value = ev.get(which) if ev.get("scale") == "normalized" else None
        return float(value) if isinstance(value, (int, float)) else None

    if (build.evidence or {}).get("kind") != "baseline":
        return held(build, "candidate_mean")
    for child in builds:
        if child.parent == build.name and (value := held(child, "baseline_mean")) is not None:
            return value
    return None
