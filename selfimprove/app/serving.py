"""What `load_policy` serves from the local workspace: the production build, or an arm of the active rollout.

In the app's path, so: one `ServedTarget` per (workspace, target, ref) per process, holding the builds already
parsed and their chat-completion arguments; a call costs a dict copy and, under a rollout, one hash of its key
(sticky arm) or one random draw (weighted). At most once per `ttl` seconds one caller re-checks the files
(`production.ref.json`, `rollout.json`: their size and mtime) and re-reads them only when they changed; other
threads keep being served meanwhile. The first load raises (there is nothing to serve yet); after that a reload
that fails (a file missing, corrupt or edited, a build that does not match its digest) never raises into the
app: the last known good state keeps being served and the failure is logged once (per distinct message) on the
`selfimprove.serving` logger.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfimprove.core.rollout import ARM_KEY, BUILD_KEY, KEY_KEY, ROLLOUT_KEY

LOG = logging.getLogger("selfimprove.serving")
DEFAULT_TTL = 5.0


class ServedArgs(dict):
    """Chat-completion arguments (a plain dict to `create(**args)`) that also say what was served: `build`,
    `digest`, `arm` and `rollout` (None outside a rollout), and `metadata`, the span metadata naming them."""

    build: str
    digest: str
    arm: str | None
    rollout: str | None
    policy: Any

    key: str | None

    def replaced(self, args: dict[str, Any]) -> ServedArgs:
        """Other arguments (a rendering) that say they were served the same way."""
        out = ServedArgs(args)
        out.__dict__.update(self.__dict__)
        return out

    @property
    def metadata(self) -> dict[str, str]:
        out = {BUILD_KEY: self.build}
        if self.rollout is not None:
            out.update({ROLLOUT_KEY: self.rollout, ARM_KEY: self.arm or ""})
        if getattr(self, "key", None) is not None:
            out[KEY_KEY] = self.key
        return out


@dataclass(frozen=True)
class _Arm:
    build: Any  # core.records.Build
    args: dict[str, Any]


@dataclass(frozen=True)
class _State:
    signature: tuple
    production: _Arm | None
    rollout: Any  # core.rollout.Rollout | None (active only)
    arms: dict[str, _Arm]


class ServedTarget:
    """The served state of one target; see the module docstring. Thread-safe."""

    def __init__(self, root: Path, target: str, ref: str = "production"):
        from selfimprove.store.runs import Workspace

        self.prompts_dir = Workspace(root).prompts_dir
        self.target, self.ref = target, ref
        self._state: _State | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._logged: set[str] = set()

    def _files(self) -> list[Path]:
        tdir = self.prompts_dir / self.target
        return [tdir / f"{self.ref}.ref.json", tdir / "rollout.json"]

    def _signature(self) -> tuple:
        sig = []
        for path in self._files():
            try:
                st = os.stat(path)
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                sig.append(None)
        return tuple(sig)

    def _load(self, signature: tuple) -> _State:
        from selfimprove.core.errors import IntegrityError, UsageError
        from selfimprove.store.builds import production, read_named_build
        from selfimprove.store.rollouts import active
        from selfimprove.telemetry.phoenix_prompts import openai_arguments

        prod = production(self.prompts_dir, self.target, self.ref)
        rollout = active(self.prompts_dir, self.target) if self.ref == "production" else None
        arms: dict[str, _Arm] = {}
        if rollout is not None:
            for name in ("champion", "challenger"):
                ref = rollout.arm(name)
                build = read_named_build(self.prompts_dir, self.target, ref.build)
                if build.digest != ref.digest:
                    raise IntegrityError(f"the rollout serves {ref.build} with digest {ref.digest}, but that build "
                                         f"has {build.digest}", path=str(self._files()[1]))
                arms[name] = _Arm(build, openai_arguments(build.policy))
        elif prod is None:
            raise UsageError(f"target '{self.target}' has no '{self.ref}' build in {self.prompts_dir / self.target}",
                             hint="promote a candidate first (`selfimprove promote`)")
        return _State(signature, _Arm(prod, openai_arguments(prod.policy)) if prod else None, rollout, arms)

    def state(self, ttl: float) -> _State:
        now = time.monotonic()
        current = self._state
        if current is not None and now - self._checked < ttl:
            return current
        if current is not None and not self._lock.acquire(blocking=False):
            return current  # another thread is re-checking: serve what we have
        if current is None:
            self._lock.acquire()
        try:
            current = self._state
            if current is not None and time.monotonic() - self._checked < ttl:
                return current
            signature = self._signature()
            if current is None or signature != current.signature:
                try:
                    self._state = current = self._load(signature)
                except Exception as exc:  # never into the app once something was served
                    if current is None:
                        raise
                    self._log_once(exc)
            self._checked = time.monotonic()
            return current
        finally:
            self._lock.release()

    def _log_once(self, exc: Exception) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if message not in self._logged:
            self._logged.add(message)
            LOG.warning("selfimprove: serving the last known good build of '%s'; reloading failed: %s",
                        self.target, message)

    def serve(self, key: str | None = None, ttl: float = DEFAULT_TTL) -> ServedArgs:
        state = self.state(ttl)
        arm_name = None
        if state.rollout is not None:
            arm_name = state.rollout.arm_for(key, random.random() if key is None else None)
            arm = state.arms[arm_name]
        else:
            arm = state.production
        args = ServedArgs(arm.args)
        args["messages"] = [dict(m) for m in arm.args["messages"]]
        args.build, args.digest, args.policy = arm.build.name, arm.build.digest, arm.build.policy
        args.arm, args.rollout = arm_name, state.rollout.id if state.rollout is not None else None
        args.key = key
        return args


_TARGETS: dict[tuple[str, str, str], ServedTarget] = {}
_TARGETS_LOCK = threading.Lock()


def served_target(root: str | Path, target: str, ref: str = "production") -> ServedTarget:
    """The process's ServedTarget for (root, target, ref), made on first use."""
    key = (os.path.abspath(root), target, ref)
    found = _TARGETS.get(key)
    if found is None:
        with _TARGETS_LOCK:
            found = _TARGETS.get(key)
            if found is None:
                found = _TARGETS[key] = ServedTarget(Path(root), target, ref)
    return found
