"""`selfimprove verify`: re-derive every digest of a run, of every build and ref, and the links between them; the
first mismatch is an IntegrityError naming the file (exit 4).

What binds what:
- a run: its manifest's own digest, each stage record's digest, each output's digest (tables also by their
  bytes), each input against the stage that produced it, the superseded records it keeps, its parent build;
- a build: its own digest, its parent's digest, and — when a run proved it — that the run exists, that the
  manifest the build recorded is the run's manifest (the run's manifest as it stood at promotion is a prefix of
  it: a sealed run only ever gains stages), and that its evidence (the report, the candidate file) resolves in
  the run by digest;
- a ref: it names an existing build with the digest the ref records, and the ref log (`refs.jsonl`) parses,
  names only existing builds with their digests, and ends where the ref is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import digest, pretty_json
from selfimprove.core.errors import IntegrityError
from selfimprove.store.artifacts import file_digest, ref_mismatch
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
            if opath.suffix == ".json" and opath.is_file():
                _load(opath)
            why = ref_mismatch(run.path, out)
            if why:
                raise IntegrityError(why, path=str(opath))
            produced[out["path"]] = out["digest"]
            files += 1
    for entry in manifest.get("superseded", []):
        rpath = run.path / entry["record"]
        if digest(_load(rpath)) != entry["digest"]:
            raise IntegrityError(f"{rpath} does not match the digest the manifest keeps for it", path=str(rpath))
    parent = manifest.get("parent_build")
    if parent:
        from selfimprove.store.builds import build_dir, read_build

        bpath = build_dir(run.workspace.prompts_dir, run.target) / f"{parent['name']}.json"
        if not bpath.is_file():
            raise IntegrityError(f"parent build {parent['name']} of {run.run_id} is missing ({bpath})", path=str(bpath))
        if read_build(bpath).digest != parent["digest"]:
            raise IntegrityError(f"parent build {bpath} does not match the digest the run recorded", path=str(bpath))
    return {"run": run.run_id, "target": run.target, "stages": len(manifest["stages"]), "files": files}


def manifest_prefix_digests(manifest: dict[str, Any]) -> set[str]:
    """The digests the manifest had as its stages were appended one by one (what a build may have recorded)."""
    out = set()
    for k in range(len(manifest["stages"]) + 1):
        out.add(manifest_digest({**manifest, "stages": manifest["stages"][:k]}))
    return out


def verify_build_evidence(ws: Any, build: Any) -> None:
    """A build a run proved: the run exists, its manifest is the one the build recorded, the evidence resolves."""
    run = Run(ws, build.target, build.run)
    if not (run.path / "manifest.json").is_file():
        raise IntegrityError(f"build {build.name} was proved by run {build.run}, whose manifest is missing "
                             f"({run.path / 'manifest.json'})", path=str(run.path / "manifest.json"))
    manifest = run.manifest()
    if build.run_manifest_digest not in manifest_prefix_digests(manifest):
        raise IntegrityError(f"run {build.run} no longer holds the evidence build {build.name} recorded: its "
                             f"manifest is not the one promoted ({build.run_manifest_digest})",
                             path=str(run.path / "manifest.json"))
    evidence = build.evidence
    report = evidence.get("report") or {}
    if report.get("digest"):
        rpath = run.path / report.get("path", "report.json")
        if not rpath.is_file() or file_digest(rpath)[0] != report["digest"]:
            raise IntegrityError(f"{rpath} is not the report build {build.name} was promoted on "
                                 f"({report['digest']})", path=str(rpath))
    if evidence.get("id"):
        cpath = run.path / "candidates" / f"{evidence['id']}.json"
        if not cpath.is_file():
            raise IntegrityError(f"{cpath}, the candidate build {build.name} was promoted from, is missing",
                                 path=str(cpath))
        if evidence.get("candidate_digest") and file_digest(cpath)[0] != evidence["candidate_digest"]:
            raise IntegrityError(f"{cpath} is not the candidate build {build.name} was promoted from", path=str(cpath))
        from selfimprove.core.records import Policy

        if Policy.model_validate(_load(cpath).get("policy")).digest != build.policy_digest:
            raise IntegrityError(f"{cpath} holds another policy than build {build.name}", path=str(cpath))


def verify_refs(prompts_dir: Path, target: str) -> list[str]:
    """Every `<ref>.ref.json` names an existing build with that build's digest, and the ref log agrees with it.
    Returns the refs checked."""
    from selfimprove.store.builds import build_dir, production

    bdir = build_dir(prompts_dir, target)
    refs = sorted(p.name.removesuffix(".ref.json") for p in bdir.glob("*.ref.json")) if bdir.is_dir() else []
    current = {ref: production(prompts_dir, target, ref) for ref in refs}
    log = bdir / "refs.jsonl"
    last: dict[str, tuple[str, str]] = {}
    if log.is_file():
        known: dict[str, str] = {}
        for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
                ref, name, d = entry["ref"], entry["build"], entry["digest"]
            except (ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(f"{log} line {n} is not a ref move ({exc})", path=str(log)) from exc
            if name not in known:
                bfile = bdir / f"{name}.json"
                from selfimprove.store.builds import read_build

                known[name] = read_build(bfile).digest if bfile.is_file() else ""
            if known[name] != d:
                raise IntegrityError(f"{log} line {n} moves '{ref}' to {name} with a digest that build does not have",
                                     path=str(log))
            last[ref] = (name, d)
    for ref, build in current.items():
        if last.get(ref) != (build.name, build.digest):
            raise IntegrityError(f"{bdir / (ref + '.ref.json')} points at {build.name}, but the ref log "
                                 f"{'ends at ' + last[ref][0] if ref in last else 'never moved it'}",
                                 path=str(bdir / f"{ref}.ref.json"))
    for ref in set(last) - set(current):
        raise IntegrityError(f"the ref log {log} moved '{ref}', but {bdir / (ref + '.ref.json')} is missing",
                             path=str(bdir / f"{ref}.ref.json"))
    return refs


def verify_target(ws: Any, target: str) -> dict[str, Any]:
    """Every run of the target (a run folder without a manifest is damage), every build with its chain and
    evidence, every ref and the ref log. Returns the summary `verify` prints."""
    from selfimprove.store.builds import verify_builds

    tdir = ws.target_dir(target)
    for folder in sorted(tdir.iterdir()) if tdir.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith(".") and not (folder / "manifest.json").exists():
            raise IntegrityError(f"run folder {folder} has no manifest.json", path=str(folder / "manifest.json"),
                                 hint="restore the file, or remove the damaged run folder")
    checked = [verify_run(r) for r in ws.runs(target)]
    builds = verify_builds(ws.prompts_dir, target)
    for b in builds:
        if b.run is not None:
            verify_build_evidence(ws, b)
    refs = verify_refs(ws.prompts_dir, target)
    from selfimprove.store.rollouts import verify_rollouts

    rollout = verify_rollouts(ws.prompts_dir, target)
    return {"target": target, "ok": True, "runs": checked, "builds": [b.name for b in builds], "refs": refs,
            **({"rollout": rollout} if rollout else {})}
