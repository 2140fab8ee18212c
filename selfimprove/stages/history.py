"""The chain of runs and builds of one target, for `selfimprove log`.

One damaged run or build does not hide the others: it is listed with `error` (what is wrong, naming the file)
instead of its facts, and `selfimprove verify` says the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfimprove.core.errors import IntegrityError
from selfimprove.store.builds import build_dir, production, read_build
from selfimprove.store.runs import Workspace


def target_history(root: Path, target: str) -> dict[str, Any]:
    ws = Workspace(root)
    runs = []
    tdir = ws.target_dir(target)
    for folder in sorted(tdir.iterdir()) if tdir.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            runs.append(_run_entry(ws, target, folder))
    try:
        prod, prod_error = production(ws.prompts_dir, target), None
    except IntegrityError as exc:
        prod, prod_error = None, exc.message
    builds = []
    bdir = build_dir(ws.prompts_dir, target)
    for path in sorted(bdir.glob("v[0-9][0-9][0-9][0-9].json")) if bdir.is_dir() else []:
        try:
            b = read_build(path)
        except IntegrityError as exc:
            builds.append({"name": path.stem, "error": exc.message, "production": False})
            continue
        primary = b.evidence.get("primary") or {}
        builds.append({"name": b.name, "parent": b.parent, "run": b.run, "digest": b.digest,
                       "policy_digest": b.policy_digest, "primary": primary.get("eval"),
                       "delta": primary.get("diff"), "ci": primary.get("ci"),
                       "production": prod is not None and prod.name == b.name})
    out = {"target": target, "runs": runs, "builds": builds, "production": prod.name if prod else None}
    if prod_error:
        out["production_error"] = prod_error
    return out


def _run_entry(ws: Workspace, target: str, folder: Path) -> dict[str, Any]:
    from selfimprove.store.runs import Run

    run = Run(ws, target, folder.name)
    try:
        manifest = run.manifest()
    except IntegrityError as exc:
        return {"run": run.run_id, "error": exc.message, "stages": []}
    try:
        meta = json.loads((run.path / "meta.json").read_text())
    except (OSError, ValueError):  # volatile facts only: a damaged meta.json costs the creation time
        meta = {}
    parent = manifest.get("parent_build") or {}
    entry = {"run": run.run_id, "created_at": meta.get("created_at"),
             "stages": [s["stage"] for s in manifest["stages"]], "parent_build": parent.get("name")}
    if manifest.get("forked_from"):
        entry["forked_from"] = manifest["forked_from"]["run"]
    if manifest.get("superseded"):
        entry["superseded"] = [s["stage"] for s in manifest["superseded"]]
    return entry
