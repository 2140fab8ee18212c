"""Run a local HTTP server as a child process until it is healthy, and never leak it.

Shared by the Phoenix launcher (telemetry/phoenix_server.py) and the local model server (llm/local/serve.py):
a command started in its own session with its output in a log file, a health URL polled until it answers 200,
the log's tail in the error when it exits or stays unhealthy, SIGTERM then SIGKILL on stop.

Invariants: a returned child is healthy, or an error was raised and the process is gone; every child is stopped
at interpreter exit (atexit), and on Linux also when the starting process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self

from selfimprove.core.errors import SelfimproveError

_LIVE: set[ChildServer] = set()
_LIVE_LOCK = threading.Lock()


class _Server:
    """What every server here shares: a `with` block stops it, and its repr says where it runs and whether it
    still does (subclasses have `url`, `pid`, `is_running()` and `stop()`)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"{type(self).__name__}(url={self.url!r}, pid={self.pid}, {state})"


class ChildServer(_Server):
    """A running child process serving HTTP at `url`; its output goes to `log_path`."""

    def __init__(self, process: subprocess.Popen, *, name: str, url: str, log_path: Path, log_file):
        self._process = process
        self._log_file = log_file
        self._on_stop: list[Callable[[], None]] = []
        self.name = name
        self.url = url
        self.log_path = log_path
        self.startup_seconds = 0.0

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def is_running(self) -> bool:
        return self._process.poll() is None

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` once after the process is gone (e.g. remove a temporary work dir)."""
        self._on_stop.append(callback)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Idempotent."""
        terminate(self._process, grace)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if not self._log_file.closed:
            self._log_file.close()
        callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            callback()


class ServerHandle(_Server):
    """What a caller of `launch` hands out (the local Phoenix, a local model): its child server with the caller's
    own facts beside it. Stopping the handle stops the child; a `with` block stops it on exit."""

    def __init__(self, child: ChildServer):
        self.child = child

    @property
    def url(self) -> str:
        return self.child.url

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def startup_seconds(self) -> float:
        return self.child.startup_seconds

    def is_running(self) -> bool:
        return self.child.is_running()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Idempotent."""
        self.child.stop(grace)


class EarlyExit(SelfimproveError):
    """The child exited before it became healthy; `tail` is the end of its log (to spot a taken port)."""

    def __init__(self, message: str, tail: str, hint: str | None = None):
        super().__init__(message, hint)
        self.tail = tail


def launch(command: list[str], *, name: str, url: str, health_path: str, log_path: Path, timeout: float,
           env: Mapping[str, str] | None = None, cwd: Path | None = None,
           slow_hint: str = "see the log", exit_hint: str = "see the log", detach: bool = False) -> ChildServer:
    """Start `command` (stdout and stderr appended to `log_path`) and return once `url + health_path` answers
    200. Raises EarlyExit when the process exits first, SelfimproveError when it is not healthy in `timeout`
    seconds; in both cases the process is gone and the log is kept. `detach` leaves a healthy child running
    after this process exits (a background server that a later command stops by its pid)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the ChildServer, closed in stop()
    started = time.monotonic()
    process = subprocess.Popen(command, env=dict(env) if env is not None else None, cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True,
                               preexec_fn=None if detach else _die_with_parent_preexec())  # noqa: PLW1509
    child = ChildServer(process, name=name, url=url, log_path=log_path, log_file=log_file)
    with _LIVE_LOCK:
        _LIVE.add(child)
    deadline = started + timeout
    while True:
        if process.poll() is not None:
            child.stop()
            tail = log_tail(log_path)
            raise EarlyExit(f"{name} exited with code {process.returncode} before becoming healthy; "
                            f"log: {log_path}\nlast lines:\n{tail}", tail, hint=exit_hint)
        if healthy(url + health_path):
            child.startup_seconds = time.monotonic() - started
            if detach:
                with _LIVE_LOCK:
                    _LIVE.discard(child)
                log_file.close()
            return child
        if time.monotonic() > deadline:
            child.stop()
            raise SelfimproveError(f"{name} not healthy at {url}{health_path} after {timeout:g}s; log: {log_path}"
                                   f"\nlast lines:\n{log_tail(log_path)}", hint=slow_hint)
        time.sleep(0.2)


def healthy(url: str) -> bool:
    """True when GET `url` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port(host: str = "127.0.0.1", exclude: set[int] = frozenset()) -> int:
    """A port that is free right now on `host` ("" = all interfaces)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            found = s.getsockname()[1]
        if found not in exclude:
            return found


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


def terminate(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; nothing when it has already exited."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)
    except ProcessLookupError:
        pass


def _die_with_parent_preexec():
    """On Linux, ask the kernel to SIGTERM the child if the parent dies without running atexit (SIGKILL).
    Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for child in live:
        child.stop(grace=5.0)
