"""The chain of runs and builds of one target, for `selfimprove log`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfimprove.store.builds import list_builds, production
from selfimprove.store.runs import Workspace


def target_history(root: Path, target: str) -> dict[str, Any]:
    ws = Workspace(root)
    runs = []
    for run in ws.runs(target):
        manifest = run.manifest()
        meta_path = run.path / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        parent = manifest.get("parent_build") or {}
        runs.append({"run": run.run_id, "created_at": meta.get("created_at"),
                     "stages": [s["stage"] for s in manifest["stages"]], "parent_build": parent.get("name")})
    prod = production(ws.prompts_dir, target)
    builds = []
    for b in list_builds(ws.prompts_dir, target):
        primary = b.evidence.get("primary") or {}
        builds.append({"name": b.name, "parent": b.parent, "run": b.run, "digest": b.digest,
                       "policy_digest": b.policy_digest, "primary": primary.get("eval"),
                       "delta": primary.get("diff"), "ci": primary.get("ci"),
                       "production": prod is not None and prod.name == b.name})
    return {"target": target, "runs": runs, "builds": builds,
            "production": prod.name if prod else None}
