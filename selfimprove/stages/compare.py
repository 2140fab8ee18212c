"""`diff` and `show` over builds: what changed between two builds, and does B regress A?

How "B regresses A" is decided: every promoted build's evidence measures it against its parent (the candidate
minus the baseline on held-out data). The estimated change from A to B on each eval is the sum of those measured
gains along the chain from A to B (up to their common ancestor, then down), each step's gain direction-adjusted;
B regresses A when any eval's estimated change is below minus its tolerance (the target's `[gate]` tolerances;
0.02 without a config). A rollback (B an ancestor of A) therefore regresses by what the promotions gained. When
the path crosses a step with no measurement (a baseline build recorded because production drifted) or the
builds share no ancestor, the change is unknown and counts as a regression for `--fail-on-regression`: CI
cannot show it is safe. The sum of point estimates has no CI of its own; each step's CI is listed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from selfimprove.core.errors import UsageError
from selfimprove.core.gate import directed
from selfimprove.core.records import Build
from selfimprove.store import builds as store

PARAMS = ("model", "temperature", "top_p", "max_tokens", "response_format", "tools")


def resolve_build(prompts_dir: Path, target: str, spec: str) -> Build:
    """'production' (or another ref), 'v0003', '3', or the path of a build file."""
    from selfimprove.stages.promote import build_name

    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return store.read_build(path)
    bdir = store.build_dir(prompts_dir, target)
    if (bdir / f"{spec}.ref.json").is_file():
        return store.production(prompts_dir, target, spec)
    try:
        name = build_name(spec)
    except UsageError:
        raise UsageError(f"no build or ref {spec!r} for target '{target}'",
                         hint="name a build (v0002), a ref (production) or a build file") from None
    if not (bdir / f"{name}.json").is_file():
        have = ", ".join(b.name for b in store.list_builds(prompts_dir, target)) or "none"
        raise UsageError(f"no build {name} for target '{target}' (builds: {have})")
    return store.read_build(bdir / f"{name}.json")


def prompt_document(build: Build) -> list[str]:
    lines = build.policy.system_prompt.splitlines()
    for m in build.policy.few_shot:
        lines += [f"[few-shot {m.role}] {line}" for line in (m.text() or "").splitlines() or [""]]
    return lines


def prompt_diff(a: Build, b: Build) -> str:
    return "\n".join(difflib.unified_diff(prompt_document(a), prompt_document(b), fromfile=f"{a.name}/prompt",
                                          tofile=f"{b.name}/prompt", lineterm=""))


def param_changes(a: Build, b: Build) -> list[dict[str, Any]]:
    pa, pb = a.policy.model_dump(mode="json"), b.policy.model_dump(mode="json")
    return [{"name": k, "a": pa.get(k), "b": pb.get(k)} for k in PARAMS if pa.get(k) != pb.get(k)]


def _lineage(build: Build, by_digest: dict[str, Build]) -> list[Build]:
    """`build`, its parent, … up to the root (stopping at a parent that is not in the chain)."""
    out, seen = [build], {build.digest}
    while out[-1].parent_digest and out[-1].parent_digest in by_digest and out[-1].parent_digest not in seen:
        out.append(by_digest[out[-1].parent_digest])
        seen.add(out[-1].digest)
    return out


def _step_gains(build: Build) -> dict[str, float] | None:
    """Direction-adjusted gain per eval that `build`'s evidence measured against its parent (None: unmeasured)."""
    evals = build.evidence.get("evals")
    if not evals:
        return None
    return {name: g for name, e in evals.items() if (g := directed(e)[0]) is not None}


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
    totals: dict[str, float] = {}
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
        for name, g in gains.items():
            totals[name] = totals.get(name, 0.0) + sign * g
    evals = {}
    for name, delta in sorted(totals.items()):
        tol = tolerances.get(name, default_tolerance)
        evals[name] = {"delta": round(delta, 12), "tolerance": tol,
                       "verdict": "regressed" if delta < -tol else ("improved" if delta > tol else "unchanged")}
    reasons = [f"{n}: estimated change {e['delta']:+.3f} is beyond the tolerance {e['tolerance']:.3f}"
               for n, e in evals.items() if e["verdict"] == "regressed"]
    if relation == "unrelated":
        reasons.append(f"{a.name} and {b.name} share no ancestor: no evidence relates them")
    if unmeasured:
        reasons.append("the path crosses unmeasured step(s) " + ", ".join(unmeasured)
                       + " (baselines recorded when production drifted), so the change is unknown")
    return {"a": _summary(a), "b": _summary(b), "relation": relation,
            "common_ancestor": common.name if common else None, "prompt_diff": prompt_diff(a, b),
            "params": param_changes(a, b), "evals": evals, "path": path, "unmeasured": unmeasured,
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
