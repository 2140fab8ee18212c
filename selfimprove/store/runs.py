"""Run folders, stage records and the manifest chain.

Layout: `<root>/runs/<target>/<run-id>/` holds each stage's artifacts, `stages/<stage>.json` (the stage record),
`manifest.json` (the records in order, the parent build, and the manifest's own digest) and `meta.json` (volatile
facts: times, host, durations — outside every digest). A stage whose key — digest of (stage, params, input digests,
code version) — was already computed, in this run or another run of the target, is reused unless forced.

Re-running a recorded stage with another key replaces its record and drops the stages that consumed its outputs
(directly or through another stage); the replaced and dropped records are not lost silently: the manifest lists
them under `superseded` and their record files move to `stages/superseded/`. A run a build names is sealed
(store/seal.py): there a recorded stage may only be reused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Self

from selfimprove.core.canonical import digest
from selfimprove.core.errors import IntegrityError, UsageError
from selfimprove.store import atomic
from selfimprove.store.artifacts import artifact_ref, ref_mismatch, sorted_refs
from selfimprove.store.documents import read_json

MANIFEST_SCHEMA = "selfimprove.manifest/1"
RECORD_SCHEMA = "selfimprove.stage/1"


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def manifest_digest(manifest: dict[str, Any]) -> str:
    return digest({k: v for k, v in manifest.items() if k != "digest"})


class Workspace:
    """The folder that holds `runs/`, `prompts/` and `configs/` (by default the current directory)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.prompts_dir = self.root / "prompts"

    def target_dir(self, target: str) -> Path:
        return self.runs_dir / target

    def lock(self, target: str, *, wait: bool = False):
        from selfimprove.store.lock import target_lock

        return target_lock(self.target_dir(target), wait=wait)

    def targets(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def runs(self, target: str) -> list[Run]:
        tdir = self.target_dir(target)
        if not tdir.is_dir():
            return []
        return [Run(self, target, p.name) for p in sorted(tdir.iterdir()) if (p / "manifest.json").is_file()]

    def new_run(self, target: str, *, parent_build: dict[str, Any] | None = None,
                forked_from: dict[str, Any] | None = None) -> Run:
        run_id = self._next_run_id(target)
        run = Run(self, target, run_id)
        run.path.mkdir(parents=True, exist_ok=False)
        manifest = {"schema": MANIFEST_SCHEMA, "target": target, "run": run_id,
                    "parent_build": parent_build, "stages": []}
        if forked_from is not None:
            manifest["forked_from"] = forked_from
        manifest["digest"] = manifest_digest(manifest)
        atomic.write_json(run.path / "manifest.json", manifest)
        atomic.write_json(run.path / "meta.json", {"run": run_id, "created_at": _utcnow(),
                                                   "host": platform.node(), "stages": {}})
        return run

    def _next_run_id(self, target: str) -> str:
        """`<UTC time to the microsecond>Z-<4 hex>`, strictly after every existing run id, so that sorting run ids
        sorts runs by creation even within one second or after a clock step back."""
        now = dt.datetime.now(dt.UTC)
        tdir = self.target_dir(target)
        existing = sorted(p.name for p in tdir.iterdir() if p.is_dir()) if tdir.is_dir() else []
        stamp = f"{now:%Y%m%dT%H%M%S.%f}"
        if existing and existing[-1][: len(stamp)] >= stamp:
            last = dt.datetime.strptime(existing[-1][: len(stamp)], "%Y%m%dT%H%M%S.%f")
            stamp = f"{last + dt.timedelta(microseconds=1):%Y%m%dT%H%M%S.%f}"
        return f"{stamp}Z-{secrets.token_hex(2)}"

    def open_run(self, target: str, run: str | None = None) -> Run:
        """A run by id (or path), or the latest run of the target when `run` is None."""
        if run is None:
            runs = self.runs(target)
            if not runs:
                raise UsageError(f"no runs yet for target '{target}' in {self.target_dir(target)}",
                                 hint="start one with `selfimprove pull`")
            return runs[-1]
        candidate = Path(run)
        if (candidate / "manifest.json").is_file():
            return Run(Workspace(candidate.parent.parent.parent), candidate.parent.name, candidate.name)
        found = Run(self, target, run)
        if found.path.is_dir() and not (found.path / "manifest.json").exists():
            raise IntegrityError(f"run folder {found.path} has no manifest.json", path=str(found.path / "manifest.json"),
                                 hint="restore the file, or remove the damaged run folder")
        if not (found.path / "manifest.json").is_file():
            raise UsageError(f"run '{run}' not found for target '{target}'", hint="list runs with `selfimprove log`")
        return found


class Run:
    """One improvement cycle of one target."""

    def __init__(self, workspace: Workspace, target: str, run_id: str):
        self.workspace, self.target, self.run_id = workspace, target, run_id
        self.path = workspace.target_dir(target) / run_id

    def __repr__(self) -> str:
        return f"Run({self.target}/{self.run_id})"

    def manifest(self) -> dict[str, Any]:
        """The parsed manifest; IntegrityError naming it when it is missing, truncated or not a manifest."""
        path = self.path / "manifest.json"
        data = read_json(path, "run manifest")
        if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA or not isinstance(
                data.get("stages"), list):
            raise IntegrityError(f"{path} is not a {MANIFEST_SCHEMA} document", path=str(path))
        return data

    def record(self, stage: str) -> dict[str, Any] | None:
        entry = next((e for e in self.manifest()["stages"] if e["stage"] == stage), None)
        return None if entry is None else read_json(self.path / entry["record"], "stage record")

    def stage(self, name: str, *, params: dict[str, Any], inputs: list[str] = (), force: bool = False) -> Stage:
        return Stage(self, name, params=params, inputs=list(inputs), force=force)

    def _commit(self, record: dict[str, Any], timing: dict[str, Any]) -> None:
        rel = f"stages/{record['stage']}.json"
        entry = {"stage": record["stage"], "record": rel, "digest": digest(record)}
        manifest = self.manifest()
        if entry not in manifest["stages"]:  # a reused record changes nothing
            self._supersede(manifest, record)
            atomic.write_json(self.path / rel, record)
            manifest["stages"].append(entry)
            manifest["digest"] = manifest_digest(manifest)
            atomic.write_json(self.path / "manifest.json", manifest)
        meta_path = self.path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):  # volatile facts: a damaged meta.json is replaced, never fatal
            meta = {"run": self.run_id}
        meta.setdefault("stages", {})[record["stage"]] = timing
        atomic.write_json(meta_path, meta)
        cache = self.workspace.target_dir(self.target) / ".stage-cache" / f"{record['key'][7:]}.json"
        atomic.write_json(cache, {"run": self.run_id, "stage": record["stage"]})


    def _supersede(self, manifest: dict[str, Any], record: dict[str, Any]) -> None:
        """Take the stage's old record, and every record that consumed its outputs (transitively), out of the
        manifest's chain into its `superseded` list; their record files move to stages/superseded/."""
        stages = manifest["stages"]
        old = next((e for e in stages if e["stage"] == record["stage"]), None)
        if old is None:
            return
        from selfimprove.store.seal import check_unsealed

        check_unsealed(self, record["stage"])
        changed = {o["path"] for o in read_json(self.path / old["record"], "stage record")["outputs"]}
        changed |= {o["path"] for o in record["outputs"]}
        dropped = [old]
        for e in stages[stages.index(old) + 1:]:
            rec = read_json(self.path / e["record"], "stage record")
            if any(i["path"] in changed for i in rec["inputs"]):
                dropped.append(e)
                changed |= {o["path"] for o in rec["outputs"]}
        history = manifest.setdefault("superseded", [])
        for e in dropped:
            moved = f"stages/superseded/{e['stage']}.{e['digest'][7:19]}.json"
            (self.path / moved).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / e["record"], self.path / moved)
            history.append({"stage": e["stage"], "record": moved, "digest": e["digest"],
                            "reason": "re-run" if e is old else f"consumed outputs of re-run '{record['stage']}'"})
        manifest["stages"] = [e for e in stages if e not in dropped]


class Stage:
    """A stage's work in a run: declares params and inputs, writes outputs, commits a record.

    Use as a context manager; the record is committed when the block exits without an exception. When
    `reused` is true the outputs are already in place and the block should skip its work.
    """

    def __init__(self, run: Run, name: str, *, params: dict[str, Any], inputs: list[str], force: bool):
        from selfimprove.version import code_version

        self.run, self.name, self.params = run, name, params
        self.inputs = sorted_refs([artifact_ref(run.path, p) for p in inputs])
        self.code_version = code_version()
        self.key = digest({"stage": name, "params": params, "code_version": self.code_version,
                           "inputs": [i["digest"] for i in self.inputs]})
        self.outputs: dict[str, None] = {}
        self.started = time.time()
        self.reused = self._try_reuse(force)

    def _try_reuse(self, force: bool) -> bool:
        """Reuse this run's record, or copy the outputs of another run's record, with the same key. A recorded
        stage that is not reused is checked against sealing first (nothing is written in a sealed run)."""
        own = self.run.record(self.name)
        if not force and own and own["key"] == self.key and _outputs_intact(self.run.path, own):
            self.record = own
            return True
        if own is not None:
            from selfimprove.store.seal import check_unsealed, sealing_builds

            damage = [(out["path"], why) for out in own["outputs"] if (why := ref_mismatch(self.run.path, out))]
            if damage and own["key"] == self.key and sealing_builds(self.run):  # evidence damaged, not re-run
                raise IntegrityError(damage[0][1], path=str(self.run.path / damage[0][0]),
                                     hint="`selfimprove verify` names every damaged file; restore it, or --fork")
            check_unsealed(self.run, self.name)
        if force:
            return False
        cache = self.run.workspace.target_dir(self.run.target) / ".stage-cache" / f"{self.key[7:]}.json"
        if not cache.is_file():
            return False
        try:  # another run's damage is no reason to fail here: it is just not reused
            source = Run(self.run.workspace, self.run.target, json.loads(cache.read_text())["run"])
            theirs = source.record(self.name) if (source.path / "manifest.json").is_file() else None
            if not theirs or theirs["key"] != self.key or not _outputs_intact(source.path, theirs):
                return False
        except (IntegrityError, OSError, ValueError, KeyError):
            return False
        for out in theirs["outputs"]:
            dest = self.run.path / out["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)  # never write through a hard link a fork shares with its origin
            shutil.copy2(source.path / out["path"], dest)
            self.outputs[out["path"]] = None
        self.record = None
        return True

    def path(self, rel: str) -> Path:
        """Where to write output `rel`; registers it as an output of this stage."""
        self.outputs[rel] = None
        full = self.run.path / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        return full

    def write_json(self, rel: str, obj: Any) -> Path:
        return atomic.write_json(self.path(rel), obj)

    def write_text(self, rel: str, text: str) -> Path:
        return atomic.write_text(self.path(rel), text)

    def write_table(self, rel: str, frame: Any) -> Path:
        from selfimprove.store.tables import write_table

        return write_table(self.path(rel), frame)

    def commit(self) -> dict[str, Any]:
        if getattr(self, "record", None) is None:
            self.record = {
                "schema": RECORD_SCHEMA, "stage": self.name, "key": self.key, "params": self.params,
                "inputs": self.inputs, "code_version": self.code_version,
                "outputs": sorted_refs([artifact_ref(self.run.path, p) for p in self.outputs]),
            }
        finished = time.time()
        self.run._commit(self.record, {
            "started_at": dt.datetime.fromtimestamp(self.started, dt.UTC).isoformat(timespec="seconds"),
            "duration_s": round(finished - self.started, 3), "reused": self.reused, "pid": os.getpid()})
        return self.record

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()


def _outputs_intact(root: Path, record: dict[str, Any]) -> bool:
    return all(ref_mismatch(root, out) is None for out in record["outputs"])
