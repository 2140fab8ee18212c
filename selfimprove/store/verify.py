"""`selfimprove verify`: re-derive every digest of a run and its chain; the first mismatch is an IntegrityError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import digest, pretty_json
from selfimprove.core.errors import IntegrityError
from selfimprove.store.artifacts import file_digest
from selfimprove.store.runs import MANIFEST_SCHEMA, Run, manifest_digest


def _load(path: Path) -> dict[str, Any]:
    """Parse a JSON artifact and insist on its canonical on-disk form, so that even a whitespace byte counts."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"cannot read {path}: {exc}", path=str(path)) from exc
    if text != pretty_json(data):
        raise IntegrityError(f"{path} was edited: it is not in the form selfimprove wrote", path=str(path))
    return data


def verify_run(run: Run) -> dict[str, Any]:
    """Check the manifest's own digest, each stage record, each output, each input against what produced it,
    and the parent build. Returns a summary; raises IntegrityError naming the first file that does not match."""
    mpath = run.path / "manifest.json"
    manifest = _load(mpath)
    if manifest.get("schema") != MANIFEST_SCHEMA or manifest.get("digest") != manifest_digest(manifest):
        raise IntegrityError(f"{mpath} does not match its digest", path=str(mpath))
    produced: dict[str, str] = {}
    files = 0
    for entry in manifest["stages"]:
        rpath = run.path / entry["record"]
        record = _load(rpath)
        if digest(record) != entry["digest"]:
            raise IntegrityError(f"{rpath} does not match the digest in the manifest", path=str(rpath))
        for inp in record["inputs"]:
            if inp["path"] in produced and produced[inp["path"]] != inp["digest"]:
                raise IntegrityError(
                    f"stage '{record['stage']}' consumed {inp['path']} with a digest that no earlier stage produced",
                    path=str(rpath))
        for out in record["outputs"]:
            opath = run.path / out["path"]
            if not opath.is_file():
                raise IntegrityError(f"{opath} is missing", path=str(opath))
            if opath.suffix == ".json":
                _load(opath)
            if file_digest(opath)[0] != out["digest"]:
                raise IntegrityError(f"{opath} does not match its recorded digest", path=str(opath))
            produced[out["path"]] = out["digest"]
            files += 1
    parent = manifest.get("parent_build")
    if parent:
        from selfimprove.store.builds import build_dir, read_build

        bpath = build_dir(run.workspace.prompts_dir, run.target) / f"{parent['name']}.json"
        if not bpath.is_file():
            raise IntegrityError(f"parent build {parent['name']} of {run.run_id} is missing ({bpath})", path=str(bpath))
        if read_build(bpath).digest != parent["digest"]:
            raise IntegrityError(f"parent build {bpath} does not match the digest the run recorded", path=str(bpath))
    return {"run": run.run_id, "target": run.target, "stages": len(manifest["stages"]), "files": files}
