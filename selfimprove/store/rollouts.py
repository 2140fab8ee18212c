"""Rollouts on disk: `prompts/<target>/rollout.json` (the current revision) and `rollouts.jsonl` (every revision).

Appending to the log comes first, then the current file is replaced atomically: a crash between the two leaves a
log one revision ahead, which `read_current` notices (IntegrityError naming the file) and `write_revision`
repairs by writing the log's last revision. Each log line is a whole revision with its digest and the time it
was written (outside the digest); `verify_rollouts` re-derives every digest, the parent chain, the current file,
and that every build an arm names exists with the digest the arm records.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from selfimprove.core.errors import IntegrityError
from selfimprove.core.rollout import ROLLOUT_SCHEMA, Rollout
from selfimprove.store import atomic

CURRENT = "rollout.json"
LOG = "rollouts.jsonl"
_HINT = "`selfimprove verify` names what is damaged; `selfimprove rollout stop` ends a rollout the recorded way"


def rollout_path(prompts_dir: Path, target: str) -> Path:
    return prompts_dir / target / CURRENT


def log_path(prompts_dir: Path, target: str) -> Path:
    return prompts_dir / target / LOG


def _parse(data: Any, path: Path, where: str) -> Rollout:
    from pydantic import ValidationError

    if not isinstance(data, dict) or data.get("schema") != ROLLOUT_SCHEMA:
        raise IntegrityError(f"{where} is not a rollout document ({ROLLOUT_SCHEMA})", path=str(path), hint=_HINT)
    body = {k: v for k, v in data.items() if k not in ("schema", "digest", "at")}
    try:
        rollout = Rollout.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise IntegrityError(f"{where} is not a valid rollout: {loc}: {first['msg']}", path=str(path),
                             hint=_HINT) from exc
    if data.get("digest") != rollout.digest:
        raise IntegrityError(f"{where} does not match its digest", path=str(path), hint=_HINT)
    return rollout


def read_log(prompts_dir: Path, target: str) -> list[Rollout]:
    """Every revision, oldest first; IntegrityError naming the line that is damaged or breaks the chain."""
    path = log_path(prompts_dir, target)
    if not path.is_file():
        return []
    out: list[Rollout] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise IntegrityError(f"{path} line {n} is not JSON ({exc})", path=str(path), hint=_HINT) from exc
        rev = _parse(data, path, f"{path} line {n}")
        expected_parent = out[-1].digest if out else None
        if rev.parent != expected_parent or rev.revision != len(out) + 1:
            raise IntegrityError(f"{path} line {n} breaks the revision chain (revision {rev.revision}, parent "
                                 f"{rev.parent})", path=str(path), hint=_HINT)
        out.append(rev)
    return out


def read_current(prompts_dir: Path, target: str) -> Rollout | None:
    """The current revision (None when the target never had a rollout); IntegrityError naming the file when it
    is damaged. Reads the current file only (this is the app's path: no log replay)."""
    from selfimprove.store.documents import read_json

    path = rollout_path(prompts_dir, target)
    if not path.exists():
        return None
    return _parse(read_json(path, "rollout"), path, str(path))


def active(prompts_dir: Path, target: str) -> Rollout | None:
    current = read_current(prompts_dir, target)
    return current if current is not None and current.active else None


def write_revision(prompts_dir: Path, rollout: Rollout) -> Path:
    """Append `rollout` to the log (it must chain onto the last revision), then make it the current file."""
    log = read_log(prompts_dir, rollout.target)
    last = log[-1] if log else None
    if rollout.parent != (last.digest if last else None) or rollout.revision != len(log) + 1:
        raise IntegrityError(f"rollout revision {rollout.revision} does not follow the log's last "
                             f"({last.revision if last else 'none'})", path=str(log_path(prompts_dir, rollout.target)),
                             hint="another process changed the rollout: re-read it and retry")
    doc = {"schema": ROLLOUT_SCHEMA, **rollout.model_dump(mode="json"), "digest": rollout.digest}
    lpath = log_path(prompts_dir, rollout.target)
    lpath.parent.mkdir(parents=True, exist_ok=True)
    stamped = {**doc, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with open(lpath, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(stamped, sort_keys=True, ensure_ascii=False) + "\n")
    return atomic.write_json(rollout_path(prompts_dir, rollout.target), doc)


def verify_rollouts(prompts_dir: Path, target: str) -> dict[str, Any] | None:
    """The log's chain and digests, the current file equal to its last revision, each arm's build present with
    its digest. None when the target never had a rollout."""
    from selfimprove.store.builds import build_dir, read_build

    log = read_log(prompts_dir, target)
    current = read_current(prompts_dir, target)
    if current is None and not log:
        return None
    path = rollout_path(prompts_dir, target)
    if current is None:
        raise IntegrityError(f"{path} is missing but {log_path(prompts_dir, target)} records "
                             f"{len(log)} revision(s)", path=str(path), hint=_HINT)
    if not log or log[-1].digest != current.digest:
        raise IntegrityError(f"{path} is not the last revision the rollout log records", path=str(path), hint=_HINT)
    seen: dict[str, str] = {}
    for rev in log:
        for arm in (rev.champion, rev.challenger):
            if arm.build not in seen:
                bpath = build_dir(prompts_dir, target) / f"{arm.build}.json"
                if not bpath.is_file():
                    raise IntegrityError(f"rollout revision {rev.revision} serves {arm.build}, but {bpath} is "
                                         "missing", path=str(bpath))
                seen[arm.build] = read_build(bpath).digest
            if seen[arm.build] != arm.digest:
                raise IntegrityError(f"rollout revision {rev.revision} records another digest for {arm.build} "
                                     "than that build has", path=str(log_path(prompts_dir, target)))
    return {"revisions": len(log), "current": current.revision, "status": current.status, "id": current.id}
