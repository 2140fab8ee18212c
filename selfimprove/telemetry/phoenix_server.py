"""Start and stop a local Arize Phoenix server as a subprocess (the demo, the tests, air-gapped trials).

The server lives in its own virtualenv (importing it costs ~10 s and 440 MB), so it is only ever run as a
child process: `<python> -m phoenix.server.main serve` on a free loopback port, sqlite in a work dir (or in
memory), all its output in `<workdir>/phoenix.log` (migrations alone print ~4,500 lines).

Invariants: a started server is healthy (`GET /healthz` answered OK) or an error was raised and the child is
gone; every child is stopped at interpreter exit (atexit), and on Linux also when the starting process dies.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from selfimprove.core.errors import SelfimproveError

PYTHON_ENV = "SELFIMPROVE_PHOENIX_PYTHON"
LOG_NAME = "phoenix.log"
_REPO_VENV_PYTHON = Path(__file__).resolve().parents[1] / ".venv-phoenix" / "bin" / "python"
_LIVE: set[PhoenixServer] = set()
_LIVE_LOCK = threading.Lock()


class PhoenixServer:
    """A running Phoenix child process. `url` is the HTTP base (no trailing slash, no `/v1`)."""

    def __init__(self, process: subprocess.Popen, *, url: str, grpc_port: int, workdir: Path,
                 owns_workdir: bool, log_file, startup_seconds: float):
        self._process = process
        self._log_file = log_file
        self._owns_workdir = owns_workdir
        self.url = url
        self.grpc_port = grpc_port
        self.workdir = workdir
        self.log_path = workdir / LOG_NAME
        self.startup_seconds = startup_seconds

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def traces_endpoint(self) -> str:
        """The OTLP/HTTP endpoint for `phoenix.otel.register(endpoint=...)`."""
        return self.url + "/v1/traces"

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Idempotent. Removes a work dir it created."""
        _terminate(self._process, grace)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if not self._log_file.closed:
            self._log_file.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"PhoenixServer(url={self.url!r}, pid={self.pid}, {state})"


def start_phoenix(*, workdir: str | os.PathLike | None = None, port: int = 0, grpc_port: int = 0,
                  python: str | os.PathLike | None = None, memory_db: bool = False, timeout: float = 90,
                  extra_env: Mapping[str, str] | None = None) -> PhoenixServer:
    """Launch Phoenix and return once `/healthz` answers OK.

    `port`/`grpc_port` 0 pick free ports (gRPC always binds all interfaces, so it needs one too). `workdir`
    None uses a temp dir that `stop()` deletes; a given dir is kept (its sqlite DB can be reused). `memory_db`
    keeps the DB in memory. Inherited `PHOENIX_*` variables are dropped so the user's own Phoenix settings
    (a Postgres URL, auth) never leak into a local server; `extra_env` adds variables on top.
    Raises SelfimproveError naming the log file and its last lines if the server exits or is not healthy
    within `timeout` seconds.
    """
    command = phoenix_command(python)
    owns = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="selfimprove-phoenix-")) if owns else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    attempts = 2 if (port == 0 or grpc_port == 0) else 1  # a free port can be taken between pick and bind
    for attempt in range(attempts):
        http_port = port or free_port("127.0.0.1")
        rpc_port = grpc_port or free_port("", exclude={http_port})
        try:
            return _launch(command, wd, http_port, rpc_port, memory_db, timeout, extra_env, owns)
        except _EarlyExit as exc:
            if attempt + 1 == attempts or "address already in use" not in exc.tail.lower():
                if owns:
                    shutil.rmtree(wd, ignore_errors=True)
                raise exc.error from None
    raise AssertionError("unreachable")


def phoenix_command(python: str | os.PathLike | None = None) -> list[str]:
    """The argv that runs `phoenix serve`: argument > $SELFIMPROVE_PHOENIX_PYTHON > <repo>/.venv-phoenix >
    a `phoenix` executable on PATH."""
    chosen = python or os.environ.get(PYTHON_ENV)
    if chosen:
        if not (Path(chosen).exists() or shutil.which(str(chosen))):
            origin = "python=" if python else f"${PYTHON_ENV}="
            raise SelfimproveError(f"Phoenix python not found: {origin}{chosen}",
                                   hint="point it at the python of a venv with arize-phoenix (make setup)")
        return [str(chosen), "-m", "phoenix.server.main", "serve"]
    if _REPO_VENV_PYTHON.exists():
        return [str(_REPO_VENV_PYTHON), "-m", "phoenix.server.main", "serve"]
    exe = shutil.which("phoenix")
    if exe:
        return [exe, "serve"]
    raise SelfimproveError(
        "no Phoenix server installation found",
        hint=f"run `make setup` (creates .venv-phoenix), set {PYTHON_ENV} to a python with arize-phoenix, "
             "or put a `phoenix` executable on PATH")


def free_port(host: str = "127.0.0.1", exclude: set[int] = frozenset()) -> int:
    """A port that is free right now on `host` ("" = all interfaces)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            found = s.getsockname()[1]
        if found not in exclude:
            return found


class _EarlyExit(Exception):
    def __init__(self, error: SelfimproveError, tail: str):
        super().__init__(error.message)
        self.error, self.tail = error, tail


def _launch(command, wd: Path, port: int, grpc_port: int, memory_db: bool, timeout: float,
            extra_env, owns: bool) -> PhoenixServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(PHOENIX_WORKING_DIR=str(wd), PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port),
               PHOENIX_GRPC_PORT=str(grpc_port), PHOENIX_TELEMETRY_ENABLED="false",
               PHOENIX_ALLOW_EXTERNAL_RESOURCES="false")
    if memory_db:
        env["PHOENIX_SQL_DATABASE_URL"] = "sqlite:///:memory:"
    env.update(extra_env or {})
    log_path = wd / LOG_NAME
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the PhoenixServer, closed in stop()
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=wd, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_die_with_parent_preexec())  # noqa: PLW1509 - only prctl
    url = f"http://127.0.0.1:{port}"
    server = PhoenixServer(process, url=url, grpc_port=grpc_port, workdir=wd, owns_workdir=owns,
                           log_file=log_file, startup_seconds=0.0)
    with _LIVE_LOCK:
        _LIVE.add(server)
    deadline = started + timeout
    while True:
        if process.poll() is not None:
            server._owns_workdir = False  # the caller decides (it may retry in the same dir)
            server.stop()
            tail = log_tail(log_path)
            raise _EarlyExit(SelfimproveError(
                f"Phoenix exited with code {process.returncode} before becoming healthy; log: {log_path}\n"
                f"last lines:\n{tail}", hint="see the log; is the port free and the venv complete?"), tail)
        if _healthy(url):
            server.startup_seconds = time.monotonic() - started
            return server
        if time.monotonic() > deadline:
            server._owns_workdir = False  # keep the log for the user to read
            server.stop()
            raise SelfimproveError(
                f"Phoenix not healthy at {url}/healthz after {timeout:g}s; log: {log_path}\n"
                f"last lines:\n{log_tail(log_path)}", hint="a first start runs migrations; try a longer timeout")
        time.sleep(0.2)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _terminate(process: subprocess.Popen, grace: float) -> None:
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
    for server in live:
        server.stop(grace=5.0)
