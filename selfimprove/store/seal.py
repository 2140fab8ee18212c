"""Sealed runs and forks: evidence a build depends on is never rewritten.

A run is **sealed** once a build names it (`prompts/<target>/vNNNN.json` has `"run": <run id>`). In a sealed run a
stage that is already recorded may only be *reused* (same key, outputs intact); re-running it with another key,
or with `--force`, raises `SealedRun` naming the build, before anything is written. A stage not yet recorded may
still be added (`evaluate --split train` after promotion, or `promote` completing after a crash): adding drops
nothing, so every manifest the build recorded stays a prefix of the run's manifest.

**Forking** (`--fork` on snapshot, update and evaluate) starts a new run from a run's inputs: the stages before the
one being re-run (in pipeline order: pull, snapshot, update, evaluate, promote) are copied — records byte for byte,
outputs and the LLM-call cache hard-linked where the file system allows — after the source run verifies. The new
run's manifest names its origin (`forked_from: {run, manifest_digest}`) and the same parent build. A fork whose
stage then fails is removed, so a failed command leaves no half-made run behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfimprove.core.errors import UsageError

PIPELINE = ("pull", "snapshot", "update", "evaluate", "promote")


class SealedRun(UsageError):
    """A stage re-run would rewrite the evidence of a build."""

    def __init__(self, run: Any, stage: str, builds: list[str]):
        names = ", ".join(builds)
        super().__init__(
            f"run {run.run_id} is sealed: build {names} of '{run.target}' was promoted from it, so its "
            f"'{stage}' stage cannot be re-run there (that would rewrite the build's evidence)",
            hint=(f"evaluate again in a fork (`selfimprove evaluate --fork --run {run.run_id}`), then promote the "
                  "new run" if stage == "promote" else
                  "pass --fork to re-run it in a new run that starts from this run's inputs, or start a new run "
                  "with `selfimprove pull`"))
        self.builds = builds


def sealing_builds(run: Any) -> list[str]:
    """Names of the builds that name `run` as the run that proved them (empty: the run is not sealed)."""
    from selfimprove.store.builds import build_dir
    from selfimprove.store.documents import read_json

    bdir = build_dir(run.workspace.prompts_dir, run.target)
    if not bdir.is_dir():
        return []
    return [p.stem for p in sorted(bdir.glob("v[0-9][0-9][0-9][0-9].json"))
            if (read_json(p, "build") or {}).get("run") == run.run_id]


def check_unsealed(run: Any, stage: str) -> None:
    """Raise SealedRun when `run` is sealed (a recorded stage is about to be replaced)."""
    builds = sealing_builds(run)
    if builds:
        raise SealedRun(run, stage, builds)


def _rank(stage: str) -> int:
    base = stage.split(".")[0]
    return PIPELINE.index(base) if base in PIPELINE else len(PIPELINE)


def fork_run(source: Any, stage: str) -> Any:
    """A new run holding `source`'s stages that come before `stage` in the pipeline; see the module docstring."""
    from selfimprove.store import atomic
    from selfimprove.store.documents import read_json
    from selfimprove.store.runs import manifest_digest
    from selfimprove.store.verify import verify_run

    verify_run(source)  # never fork from evidence that does not match its digests
    manifest = source.manifest()
    origin = {"run": source.run_id, "manifest_digest": manifest["digest"]}
    fork = source.workspace.new_run(source.target, parent_build=manifest.get("parent_build"), forked_from=origin)
    try:
        kept = []
        for entry in manifest["stages"]:
            if _rank(entry["stage"]) >= _rank(stage):
                continue
            record = read_json(source.path / entry["record"], "stage record")
            for rel in [entry["record"]] + [out["path"] for out in record["outputs"]]:
                _link_or_copy(source.path / rel, fork.path / rel)
            kept.append(entry)
        cache = source.path / "cache"
        if cache.is_dir():
            shutil.copytree(cache, fork.path / "cache", copy_function=_link_or_copy)
        new = fork.manifest()
        new["stages"] = kept
        new["digest"] = manifest_digest(new)
        atomic.write_json(fork.path / "manifest.json", new)
    except BaseException:
        shutil.rmtree(fork.path, ignore_errors=True)
        raise
    return fork


@contextlib.contextmanager
def stage_run(ws: Any, target: str, run: str | None, stage: str, fork: bool) -> Iterator[Any]:
    """The run a stage command works in: `run` (default the latest), or with `fork` a new run forked from it for
    `stage`, removed again if the block fails."""
    the_run = ws.open_run(target, run)
    if not fork:
        yield the_run
        return
    forked = fork_run(the_run, stage)
    try:
        yield forked
    except BaseException:
        shutil.rmtree(forked.path, ignore_errors=True)
        raise


def _link_or_copy(src: str | Path, dst: str | Path) -> str:
    """Hard-link `src` to `dst` (artifacts are written atomically, never edited in place), else copy it."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return str(dst)
