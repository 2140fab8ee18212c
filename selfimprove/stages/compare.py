"""`diff` and `show` over builds: what changed between two builds, and does B regress A?

How "B regresses A" is decided: every promoted build's evidence measures it against its parent (the candidate
minus the baseline on held-out data). The estimated change from A to B on each eval is the sum of those measured
gains along the chain from A to B (up to their common ancestor, then down), each direction-adjusted, with an
approximate CI: the steps were measured on different samples, so their distances to their CI bounds add in
quadrature (exact for a single step). B regresses A by the gate's own rule: an eval's estimated change is below
minus its tolerance (the target's `[gate]` tolerances; 0.02 without a config) and its CI excludes 0; a drop whose
CI includes 0 is reported as a "possible regression", not a failure. A rollback therefore regresses by what the
promotions gained. When the path crosses a step with no measurement (a baseline build recorded because production
drifted) or the builds share no ancestor, the change is unknown and counts as a regression for
`--fail-on-regression`: CI cannot show it is safe. Each step's own CI is listed too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfimprove.core.diffs import param_changes, prompt_diff
from selfimprove.core.errors import UsageError
from selfimprove.core.gate import directed
from selfimprove.core.records import Build
from selfimprove.store import builds as store


def resolve_build(prompts_dir: Path, target: str, spec: str) -> Build:
    """'production' (or another ref), 'v0003', '3', or the path of a build file."""
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return store.read_build(path)
    bdir = store.build_dir(prompts_dir, target)
    if (bdir / f"{spec}.ref.json").is_file():
        return store.production(prompts_dir, target, spec)
    try:
        name = store.build_name(spec)
    except UsageError:
        raise UsageError(f"no build or ref {spec!r} for target '{target}'",
                         hint="name a build (v0002), a ref (production) or a build file") from None
    return store.read_named_build(prompts_dir, target, name)


def _lineage(build: Build, by_digest: dict[str, Build]) -> list[Build]:
    """`build`, its parent, … up to the root (stopping at a parent that is not in the chain)."""
    out, seen = [build], {build.digest}
    while out[-1].parent_digest and out[-1].parent_digest in by_digest and out[-1].parent_digest not in seen:
        out.append(by_digest[out[-1].parent_digest])
        seen.add(out[-1].digest)
    return out


def _step_gains(build: Build) -> dict[str, tuple[float, tuple[float, float] | None]] | None:
    """Per eval, the direction-adjusted (gain, CI) that `build`'s evidence measured against its parent (None:
    the step was never measured)."""
    evals = build.evidence.get("evals")
    if not evals:
        return None
    out = {}
    for name, e in evals.items():
        gain, ci = directed(e)
        if gain is not None:
            out[name] = (gain, ci)
    return out


def _combine(parts: list[tuple[float, tuple[float, float] | None]]) -> tuple[float, tuple[float, float] | None]:
    """Sum of step estimates with an approximate CI: the steps were measured on different held-out samples, so
    their distances to each CI bound add in quadrature (exact for a single step). None if a step has no CI."""
    import math

    total = sum(g for g, _ in parts)
    if any(ci is None for _, ci in parts):
        return total, None
    below = math.sqrt(sum((g - ci[0]) ** 2 for g, ci in parts))
    above = math.sqrt(sum((ci[1] - g) ** 2 for g, ci in parts))
    return total, (total - below, total + above)


def compare_builds(a: Build, b: Build, chain: list[Build], tolerances: dict[str, float],
                   default_tolerance: float = 0.02) -> dict[str, Any]:
    """Everything `diff` shows; `regresses` is True, False, or True-by-default when the change is unknown."""
    by_digest = {x.digest: x for x in chain}
    by_digest.setdefault(a.digest, a)
    by_digest.setdefault(b.digest, b)
    up_a, up_b = _lineage(a, by_digest), _lineage(b, by_digest)
    common = next((x for x in up_b if x.digest in {y.digest for y in up_a}), None)
    steps: list[tuple[Build, int]] = []  # (build whose evidence is crossed, +1 toward B / -1 away from A)
    if common is not None:
        steps += [(x, -1) for x in up_a[:[y.digest for y in up_a].index(common.digest)]]
        steps += [(x, +1) for x in reversed(up_b[:[y.digest for y in up_b].index(common.digest)])]
    if a.digest == b.digest:
        relation = "same"
    elif common is None:
        relation = "unrelated"
    elif common.digest == a.digest:
        relation = "descendant"  # B descends from A
    elif common.digest == b.digest:
        relation = "ancestor"  # B is an ancestor of A (a rollback)
    else:
        relation = "diverged"
    parts: dict[str, list[tuple[float, tuple[float, float] | None]]] = {}
    unmeasured, path = [], []
    for build, sign in steps:
        gains = _step_gains(build)
        primary = build.evidence.get("primary") or {}
        path.append({"from": build.parent if sign > 0 else build.name, "to": build.name if sign > 0 else build.parent,
                     "build": build.name, "direction": sign, "eval": primary.get("eval"), "diff": primary.get("diff"),
                     "ci": primary.get("ci"), "run": build.run})
        if gains is None:
            unmeasured.append(build.name)
            continue
        for name, (g, ci) in gains.items():
            step_ci = None if ci is None else ((ci[0], ci[1]) if sign > 0 else (-ci[1], -ci[0]))
            parts.setdefault(name, []).append((sign * g, step_ci))
    evals = {}
    for name in sorted(parts):
        delta, ci = _combine(parts[name])
        tol = tolerances.get(name, default_tolerance)
        if delta < -tol:  # the gate's rule: a drop beyond tolerance that the CI distinguishes from no change
            verdict = "regressed" if ci is None or ci[1] < 0 else "possible regression"
        else:
            verdict = "improved" if delta > tol and (ci is None or ci[0] > 0) else "unchanged"
        evals[name] = {"delta": round(delta, 12), "ci": None if ci is None else [round(ci[0], 6), round(ci[1], 6)],
                       "tolerance": tol, "verdict": verdict}
    reasons = [f"{n}: estimated change {e['delta']:+.3f} is beyond the tolerance {e['tolerance']:.3f}"
               for n, e in evals.items() if e["verdict"] == "regressed"]
    if relation == "unrelated":
        reasons.append(f"{a.name} and {b.name} share no ancestor: no evidence relates them")
    if unmeasured:
        reasons.append("the path crosses unmeasured step(s) " + ", ".join(unmeasured)
                       + " (baselines recorded when production drifted), so the change is unknown")
    return {"a": _summary(a), "b": _summary(b), "relation": relation,
            "common_ancestor": common.name if common else None, "prompt_diff": prompt_diff(a.policy, b.policy, a.name, b.name),
            "params": param_changes(a.policy, b.policy), "evals": evals, "path": path, "unmeasured": unmeasured,
            "regresses": bool(reasons), "reasons": reasons,
            "evidence": {"a": a.evidence, "b": b.evidence}}


def _summary(b: Build) -> dict[str, Any]:
    return {"name": b.name, "digest": b.digest, "policy_digest": b.policy_digest, "parent": b.parent,
            "run": b.run, "primary": b.evidence.get("primary")}


def diff(root: str | Path, target: str, a: str, b: str, *, tolerances: dict[str, float] | None = None,
         default_tolerance: float = 0.02) -> dict[str, Any]:
    from selfimprove.store.runs import Workspace

    prompts = Workspace(root).prompts_dir
    chain = store.list_builds(prompts, target)
    ba, bb = resolve_build(prompts, target, a), resolve_build(prompts, target, b)
    return {"target": target, **compare_builds(ba, bb, chain, tolerances or {}, default_tolerance)}


def show(root: str | Path, target: str, spec: str) -> dict[str, Any]:
    from selfimprove.store.runs import Workspace

    prompts = Workspace(root).prompts_dir
    build = resolve_build(prompts, target, spec)
    prod = store.production(prompts, target)
    data = {**build.model_dump(mode="json"), "name": build.name, "digest": build.digest}
    return {"target": target, "build": data, "production": prod is not None and prod.digest == build.digest}
