"""The promotion gate: does a candidate's evidence earn it production? Pure: no I/O, no clock.

Input: one candidate entry of `report.json` (see docs: "report.json"), the name of the primary eval and the
target's gate settings. Output: a `GateDecision` carrying *every* reason for a refusal, not just the first.

The rules, all of which must hold:

1. **Guards.** The candidate passed its guard checks (`passed_guards`).
2. **Primary improvement, significant.** On the primary eval the candidate's gain over the baseline (the estimate
   corrected for early stopping, when the test stopped early) is at least `min_improvement`, *and* the one decision
   test recorded in the entry (`evals.<primary>.test`: the sequential test of core.stats.sequential on cluster-mean
   paired differences) is significant after its corrections: its p-value, Holm-adjusted over the candidates the
   report compared on the same held-out samples (`family`), is at most the alpha this look may spend
   (alpha / `looks`; nothing once the planned looks are used up). The report shows exactly this p, adjusted p and
   level: the gate and the report cannot disagree.
3. **No regression beyond tolerance.** For every other eval, with tolerance `max_regression[eval]` (or
   `default_max_regression`): the eval *regresses* when its gain is below minus the tolerance **and** the drop is
   significant: the cluster-robust one-sided p of "it dropped" (`p_regression`), Holm-adjusted over the
   candidate's guardrail evals, is at most alpha. A drop beyond tolerance that is not significant is not a
   refusal but a warning, so a reviewer sees it.
4. **Cost.** With `max_cost_per_call_usd` set, the candidate's cost per call is at most the ceiling (an unknown
   cost with a ceiling set is a refusal: the gate cannot show the ceiling is kept).
5. **Evidence present.** The primary eval exists in the entry, with a non-empty sample.
6. **Few failed pairs.** A pair is a sample scored on the primary eval for both the baseline and the candidate;
   a failed generation or judgement on either side loses it. More than `max_failed_pairs` (a share of the
   candidate's `n_samples`) lost is a refusal: the estimate would rest on the samples that happened to survive.

Units: report entries with `"scale": "normalized"` hold normalised scores (core.scores: [0, 1], 1 best), so the
gain is `diff`. Entries of older reports (no `scale`) are in the eval's own units: for a "minimize" eval the gain
is `-diff` and the CI is mirrored. Every threshold applies to the gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateSettings(BaseModel):
    """The thresholds the gate applies (a view of the config's `[gate]` plus the primary eval)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    primary_eval: str
    min_improvement: float = 0.02
    alpha: float = Field(0.05, gt=0, lt=1)
    comparisons: int = Field(1, ge=1, description="candidates compared on the same held-out samples (K)")
    family: dict[str, float] = Field(default_factory=dict, description="candidate id -> its primary test's p "
                                     "(the Holm family); empty: the candidate alone")
    look: int = Field(1, ge=1, description="which look at this comparison this is (earlier reports counted)")
    looks: int = Field(1, ge=1, description="planned looks at one comparison (gate.looks)")
    max_regression: dict[str, float] = Field(default_factory=dict)
    default_max_regression: float = 0.02
    max_cost_per_call_usd: float | None = None
    max_failed_pairs: float = Field(0.05, ge=0, le=1, description="largest share of pairs lost to failed calls")

    def tolerance(self, eval_name: str) -> float:
        return self.max_regression.get(eval_name, self.default_max_regression)

    @property
    def level(self) -> float:
        """The alpha this look may spend."""
        from selfimprove.core.stats.multiple import look_level

        return look_level(self.alpha, self.look, self.looks)

    def adjusted_p(self, candidate: str | None, p: float) -> float:
        """`p` Holm-adjusted over the family (the candidate's own p replaces its family entry)."""
        from selfimprove.core.stats.multiple import holm_adjusted

        family = dict(self.family)
        key = candidate if candidate is not None else "\0self"
        family[key] = p
        for i in range(len(family), self.comparisons):  # candidates compared but not listed count as p = 1
            family[f"\0other{i}"] = 1.0
        ids = sorted(family)
        return holm_adjusted([family[i] for i in ids])[ids.index(key)]


class EvalCheck(BaseModel):
    """One eval's verdict: its gain (direction-adjusted), CI on the gain, and what the gate made of it."""

    model_config = ConfigDict(frozen=True)
    eval: str
    role: str  # "primary" | "guardrail"
    gain: float | None
    ci: tuple[float, float] | None
    n: int | None
    threshold: float
    verdict: str  # "improved" | "not significant" | "too small" | "ok" | "regressed" | "possible regression" | "missing"
    p_value: float | None = None  # primary: the decision test's p
    p_adjusted: float | None = None  # primary: Holm over candidates; guardrail: Holm over the regression checks
    level: float | None = None  # what p_adjusted was compared with


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    candidate: str | None
    passed: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checks: tuple[EvalCheck, ...] = ()
    settings: GateSettings


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def directed(entry: Mapping[str, Any]) -> tuple[float | None, tuple[float, float] | None]:
    """(gain, CI on the gain) of one eval entry: as is when normalised (or "maximize"), else mirrored."""
    sign = -1.0 if entry.get("direction") == "minimize" and entry.get("scale") != "normalized" else 1.0
    diff = _finite(entry.get("diff"))
    gain = None if diff is None else sign * diff
    ci_raw = entry.get("ci")
    ci = None
    if isinstance(ci_raw, (list, tuple)) and len(ci_raw) == 2:
        lo, hi = _finite(ci_raw[0]), _finite(ci_raw[1])
        if lo is not None and hi is not None:
            a, b = sign * lo, sign * hi
            ci = (min(a, b), max(a, b))
    return gain, ci


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "no CI"


def _check_primary(name: str, ev: Mapping[str, Any] | None, s: GateSettings, reasons: list[str],
                   cid: str | None) -> EvalCheck:
    if ev is None:
        reasons.append(f"primary eval '{name}' is missing from the candidate's results")
        return EvalCheck(eval=name, role="primary", gain=None, ci=None, n=None, threshold=s.min_improvement,
                         verdict="missing")
    gain, ci = directed(ev)
    n = ev.get("n")
    if gain is None or not n:
        reasons.append(f"primary eval '{name}' has no scored samples (n={n})")
        return EvalCheck(eval=name, role="primary", gain=gain, ci=ci, n=n, threshold=s.min_improvement,
                         verdict="missing")
    test = ev.get("test") or {}
    corrected = _finite(test.get("estimate_corrected"))
    if corrected is not None:
        gain = corrected  # the effect corrected for early stopping is what the threshold applies to
    verdict = "improved"
    if gain < s.min_improvement:
        reasons.append(f"primary eval '{name}' improved by {gain:+.3f}, less than the required "
                       f"{s.min_improvement:+.3f} (95% CI {_fmt_ci(ci)}, n={n})")
        verdict = "too small"
    p = _finite(test.get("p_value"))
    if p is None:
        reasons.append(f"primary eval '{name}' has no decision test (a report from an older version?); "
                       "re-run `selfimprove evaluate --force`")
        return EvalCheck(eval=name, role="primary", gain=gain, ci=ci, n=n, threshold=s.min_improvement,
                         verdict="not significant")
    adjusted, level = s.adjusted_p(cid, p), s.level
    if adjusted > level:
        why = test.get("reason") or ""
        looks = (f"; look {s.look} of {s.looks} planned" + (": no alpha left (raise gate.looks only if you plan "
                 "more looks from the start)" if s.look > s.looks else "")) if s.look > 1 or s.looks > 1 else ""
        reasons.append(f"primary eval '{name}' gain {gain:+.3f} is not significant: p = {p:.4g}, Holm-adjusted "
                       f"over {max(len(s.family), 1)} candidate(s) {adjusted:.4g} > level {level:.4g}{looks} "
                       f"({why})")
        verdict = "not significant" if verdict == "improved" else verdict
    return EvalCheck(eval=name, role="primary", gain=gain, ci=ci, n=n, threshold=s.min_improvement, verdict=verdict,
                     p_value=p, p_adjusted=adjusted, level=level)


def _regression_family(evals: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """Holm-adjusted p of "this eval dropped" over the candidate's guardrail evals that report one."""
    from selfimprove.core.stats.multiple import holm_adjusted

    have = [(n, p) for n in names if (p := _finite((evals[n] or {}).get("p_regression"))) is not None]
    return dict(zip([n for n, _ in have], holm_adjusted([p for _, p in have])))


def _check_guardrail(name: str, ev: Mapping[str, Any], s: GateSettings, reasons: list[str],
                     warnings: list[str], p_adjusted: float | None) -> EvalCheck:
    tol = s.tolerance(name)
    gain, ci = directed(ev)
    n = ev.get("n")
    verdict = "ok"
    # older reports carry no p_regression: their CI excluding 0 stands in for significance
    significant = (p_adjusted <= s.alpha) if p_adjusted is not None else (ci is None or ci[1] < 0)
    if gain is None:
        warnings.append(f"eval '{name}' has no estimate (n={n}); it could not be checked for regression")
        verdict = "missing"
    elif gain < -tol:
        if significant:
            reasons.append(f"eval '{name}' regressed by {gain:+.3f}, beyond its tolerance {tol:.3f} "
                           f"(95% CI {_fmt_ci(ci)}, n={n}{_fmt_p(p_adjusted)})")
            verdict = "regressed"
        else:
            warnings.append(f"eval '{name}' dropped by {gain:+.3f} (tolerance {tol:.3f}) but not significantly "
                            f"(95% CI {_fmt_ci(ci)}, n={n}{_fmt_p(p_adjusted)})")
            verdict = "possible regression"
    return EvalCheck(eval=name, role="guardrail", gain=gain, ci=ci, n=n, threshold=-tol, verdict=verdict,
                     p_adjusted=p_adjusted, level=s.alpha if p_adjusted is not None else None)


def _fmt_p(p: float | None) -> str:
    return "" if p is None else f", Holm-adjusted p of a drop {p:.4g}"


def decide(candidate: Mapping[str, Any], settings: GateSettings) -> GateDecision:
    """Apply every gate rule to one report.json candidate entry; collect all reasons and warnings."""
    reasons: list[str] = []
    warnings: list[str] = []
    cid = candidate.get("id")
    if not candidate.get("passed_guards", False):
        reasons.append(f"candidate {cid} did not pass its guard checks")
    evals: Mapping[str, Any] = candidate.get("evals") or {}
    checks = [_check_primary(settings.primary_eval, evals.get(settings.primary_eval), settings, reasons, cid)]
    guards = sorted(name for name in evals if name != settings.primary_eval)
    adjusted = _regression_family(evals, guards)
    for name in guards:
        checks.append(_check_guardrail(name, evals[name], settings, reasons, warnings, adjusted.get(name)))
    ceiling = settings.max_cost_per_call_usd
    if ceiling is not None:
        cost = _finite((candidate.get("cost") or {}).get("per_call_usd"))
        if cost is None:
            reasons.append(f"cost per call is unknown, so the ceiling ${ceiling:g} cannot be checked "
                           "(set llm.prices for the task model)")
        elif cost > ceiling:
            reasons.append(f"cost per call ${cost:.6f} is above the ceiling ${ceiling:.6f}")
    errors = candidate.get("errors") or {}
    failed = sum(int(errors.get(k) or 0) for k in ("generation", "judgement"))
    if failed:
        warnings.append(f"{failed} call(s) failed during evaluation ({errors}); the estimates exclude them")
    _check_failed_pairs(candidate, evals.get(settings.primary_eval), settings, reasons)
    return GateDecision(candidate=cid, passed=not reasons, reasons=tuple(reasons), warnings=tuple(warnings),
                        checks=tuple(checks), settings=settings)


def _check_failed_pairs(candidate: Mapping[str, Any], primary: Mapping[str, Any] | None, s: GateSettings,
                        reasons: list[str]) -> None:
    total, n = candidate.get("n_samples"), (primary or {}).get("n")
    if not isinstance(total, int) or total <= 0 or not isinstance(n, int):
        return
    lost = total - n
    if lost / total > s.max_failed_pairs:
        reasons.append(f"{lost} of {total} pairs ({lost / total:.0%}) lost to failed calls on the primary eval, "
                       f"more than gate.max_failed_pairs = {s.max_failed_pairs:.0%}")


def settings_from_config(gate: Any, primary_eval: str, *, min_improvement: float | None = None,
                         alpha: float = 0.05, comparisons: int = 1, family: Mapping[str, float] | None = None,
                         look: int = 1) -> GateSettings:
    """GateSettings from the config's `[gate]` section (selfimprove.config.models.Gate), with a flag override;
    `alpha` is the config's `evaluate.alpha`, `comparisons` the number of candidates in the report, `family` their
    primary tests' p-values, `look` which look at this comparison the report is."""
    return GateSettings(
        primary_eval=primary_eval, alpha=alpha, comparisons=max(1, comparisons, len(family or {})),
        family=dict(family or {}), look=look, looks=getattr(gate, "looks", 1),
        min_improvement=gate.min_improvement if min_improvement is None else min_improvement,
        max_regression=dict(gate.max_regression), default_max_regression=gate.default_max_regression,
        max_cost_per_call_usd=gate.max_cost_per_call_usd, max_failed_pairs=gate.max_failed_pairs)


def settings_for_report(gate: Any, report: Mapping[str, Any], primary_eval: str, *, alpha: float,
                        min_improvement: float | None = None) -> GateSettings:
    """The settings a report's candidates are judged with: its family of primary-test p-values and its look."""
    family = {}
    for c in report.get("candidates") or []:
        p = _finite((((c.get("evals") or {}).get(primary_eval) or {}).get("test") or {}).get("p_value"))
        family[c["id"]] = 1.0 if p is None else p
    return settings_from_config(gate, primary_eval, min_improvement=min_improvement, alpha=alpha,
                                comparisons=len(report.get("candidates") or []), family=family,
                                look=int((report.get("decision") or {}).get("look") or 1))


def primary_evidence(candidate: Mapping[str, Any], primary_eval: str) -> dict[str, Any]:
    """`{"eval", "diff", "ci"}` for a build's evidence (`selfimprove log` reads it): raw report values."""
    ev = (candidate.get("evals") or {}).get(primary_eval) or {}
    return {"eval": primary_eval, "diff": ev.get("diff"), "ci": ev.get("ci"), "n": ev.get("n"),
            "direction": ev.get("direction", "maximize"), "baseline_mean": ev.get("baseline_mean"),
            "candidate_mean": ev.get("candidate_mean")}
