"""Builds: `prompts/<target>/vNNNN.json`, each naming its parent build, and the `production` ref.

A build file is written once and never rewritten; promotion and rollback only move the ref. Each move of the
ref is appended to `refs.jsonl` so the history of what was in production stays readable.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from selfimprove.core.errors import IntegrityError, UsageError
from selfimprove.core.records import Build
from selfimprove.store import atomic

BUILD_SCHEMA = "selfimprove.build/1"


def build_dir(prompts_dir: Path, target: str) -> Path:
    return prompts_dir / target


def list_builds(prompts_dir: Path, target: str) -> list[Build]:
    bdir = build_dir(prompts_dir, target)
    if not bdir.is_dir():
        return []
    return [read_build(p) for p in sorted(bdir.glob("v[0-9][0-9][0-9][0-9].json"))]


def build_name(spec: str) -> str:
    """'v0002', '2', '0002' -> 'v0002'."""
    text = spec.strip().lower().removeprefix("v")
    if not text.isdigit():
        raise UsageError(f"not a build name: {spec!r}", hint="builds are named v0001, v0002, …")
    return f"v{int(text):04d}"


def read_named_build(prompts_dir: Path, target: str, name: str) -> Build:
    """The build `name` (as `build_name` spells it) of the target; a UsageError listing the builds if absent."""
    path = build_dir(prompts_dir, target) / f"{name}.json"
    if not path.is_file():
        have = ", ".join(b.name for b in list_builds(prompts_dir, target)) or "none"
        raise UsageError(f"no build {name} for target '{target}' (builds: {have})",
                         hint=f"`selfimprove log --target {target}` shows the build chain")
    return read_build(path)


def read_build(path: Path) -> Build:
    """A build file, checked against its own digest; IntegrityError naming it when missing, corrupt or edited."""
    from pydantic import ValidationError

    from selfimprove.store.documents import read_json

    data = read_json(path, "build")
    if not isinstance(data, dict):
        raise IntegrityError(f"build {path} is not a build document", path=str(path))
    recorded = data.pop("digest", None)
    data.pop("schema", None)
    try:
        build = Build.model_validate(data)
    except ValidationError as exc:
        raise IntegrityError(f"build {path} is not a valid build document: {exc.errors()[0]['msg']}",
                             path=str(path)) from exc
    if recorded != build.digest or path.stem != build.name:
        raise IntegrityError(f"build {path} does not match its digest", path=str(path))
    return build


def write_build(prompts_dir: Path, build: Build) -> Path:
    """Write a new build file; refuses to overwrite an existing version."""
    path = build_dir(prompts_dir, build.target) / f"{build.name}.json"
    if path.exists():
        raise UsageError(f"build {path} already exists; builds are never rewritten")
    atomic.write_json(path, {"schema": BUILD_SCHEMA, **build.model_dump(mode="json"), "digest": build.digest})
    return path


def read_ref(ref_path: Path) -> tuple[str, str]:
    """(build name, build digest) a ref file records; IntegrityError naming it when it is damaged."""
    from selfimprove.store.documents import read_json

    data = read_json(ref_path, "ref")
    if not isinstance(data, dict) or not isinstance(data.get("build"), str) or not isinstance(data.get("digest"), str):
        raise IntegrityError(f"ref {ref_path} is not a ref document (build and digest)", path=str(ref_path))
    try:
        name = build_name(data["build"])
    except UsageError as exc:
        raise IntegrityError(f"ref {ref_path} names no build: {exc.message}", path=str(ref_path)) from exc
    return name, data["digest"]


def production(prompts_dir: Path, target: str, ref: str = "production") -> Build | None:
    """The build the ref points at, or None before the first promotion. IntegrityError naming the ref when the
    build it names is missing or is not the build whose digest the ref records (a ref edited by hand)."""
    ref_path = build_dir(prompts_dir, target) / f"{ref}.ref.json"
    if not ref_path.is_file():
        return None
    name, recorded = read_ref(ref_path)
    path = build_dir(prompts_dir, target) / f"{name}.json"
    if not path.is_file():
        raise IntegrityError(f"ref {ref_path} points at {name}, but {path} is missing", path=str(path),
                             hint="`selfimprove promote --to vNNNN` moves the ref to an existing build")
    build = read_build(path)
    if build.digest != recorded:
        raise IntegrityError(f"ref {ref_path} points at {name} but records another digest than that build's "
                             f"({recorded} ≠ {build.digest})", path=str(ref_path),
                             hint="the ref was edited: `selfimprove promote --to vNNNN` moves it the recorded way")
    return build


def move_ref(prompts_dir: Path, build: Build, ref: str = "production", reason: str = "") -> Path:
    bdir = build_dir(prompts_dir, build.target)
    ref_path = atomic.write_json(bdir / f"{ref}.ref.json", {"build": build.name, "digest": build.digest})
    entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "ref": ref,
             "build": build.name, "digest": build.digest, "reason": reason}
    with open(bdir / "refs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return ref_path


def verify_builds(prompts_dir: Path, target: str) -> list[Build]:
    """Each build matches its digest and names an existing parent with the recorded digest."""
    builds = list_builds(prompts_dir, target)
    by_name = {b.name: b for b in builds}
    for b in builds:
        if b.parent is None:
            continue
        parent = by_name.get(b.parent)
        path = str(build_dir(prompts_dir, target) / f"{b.name}.json")
        if parent is None:
            raise IntegrityError(f"build {b.name} names a missing parent {b.parent}", path=path)
        if parent.digest != b.parent_digest:
            raise IntegrityError(f"build {b.name}: parent {b.parent} does not match the recorded digest", path=path)
    return builds
