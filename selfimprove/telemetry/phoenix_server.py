"""Start and stop a local Arize Phoenix server as a subprocess (the demo, the tests, air-gapped trials).

The server lives in its own virtualenv (importing it costs ~10 s and 440 MB), so it is only ever run as a
child process: `<python> -m phoenix.server.main serve` on a free loopback port, sqlite in a work dir (or in
memory), all its output in `<workdir>/phoenix.log` (migrations alone print ~4,500 lines).

Invariants (those of the shared launcher, selfimprove.launcher): a started server is healthy (`GET /healthz`
answered OK) or an error was raised and the child is gone; every child is stopped at interpreter exit (atexit),
and on Linux also when the starting process dies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from selfimprove.core.errors import SelfimproveError
from selfimprove.launcher import ChildServer, EarlyExit, ServerHandle, free_port, launch, log_tail

__all__ = ["LOG_NAME", "PYTHON_ENV", "PhoenixServer", "free_port", "log_tail", "phoenix_command", "start_phoenix"]

PYTHON_ENV = "SELFIMPROVE_PHOENIX_PYTHON"
LOG_NAME = "phoenix.log"
_REPO_VENV_PYTHON = Path(__file__).resolve().parents[2] / ".venv-phoenix" / "bin" / "python"


class PhoenixServer(ServerHandle):
    """A running Phoenix child process. `url` is the HTTP base (no trailing slash, no `/v1`)."""

    def __init__(self, child: ChildServer, *, grpc_port: int, workdir: Path, owns_workdir: bool):
        super().__init__(child)
        self.grpc_port = grpc_port
        self.workdir = workdir
        if owns_workdir:  # stop() removes a work dir it created
            child.on_stop(lambda: shutil.rmtree(workdir, ignore_errors=True))

    @property
    def traces_endpoint(self) -> str:
        """The OTLP/HTTP endpoint for `phoenix.otel.register(endpoint=...)`."""
        return self.url + "/v1/traces"


def start_phoenix(*, workdir: str | os.PathLike | None = None, port: int = 0, grpc_port: int = 0,
                  python: str | os.PathLike | None = None, memory_db: bool = False, timeout: float = 90,
                  extra_env: Mapping[str, str] | None = None) -> PhoenixServer:
    """Launch Phoenix and return once `/healthz` answers OK.

    `port`/`grpc_port` 0 pick free ports (gRPC always binds all interfaces, so it needs one too). `workdir`
    None uses a temp dir that `stop()` deletes; a given dir is kept (its sqlite DB can be reused). `memory_db`
    keeps the DB in memory. Inherited `PHOENIX_*` variables are dropped so the user's own Phoenix settings
    (a Postgres URL, auth) never leak into a local server; `extra_env` adds variables on top.
    Raises SelfimproveError naming the log file and its last lines if the server exits or is not healthy
    within `timeout` seconds (a temp work dir is then kept, for its log).
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
            child = launch(command, name="Phoenix", url=f"http://127.0.0.1:{http_port}", health_path="/healthz",
                           log_path=wd / LOG_NAME, timeout=timeout, cwd=wd,
                           env=_environment(wd, http_port, rpc_port, memory_db, extra_env),
                           exit_hint="see the log; is the port free and the venv complete?",
                           slow_hint="a first start runs migrations; try a longer timeout")
        except EarlyExit as exc:
            if attempt + 1 == attempts or "address already in use" not in exc.tail.lower():
                if owns:
                    shutil.rmtree(wd, ignore_errors=True)
                raise
            continue
        return PhoenixServer(child, grpc_port=rpc_port, workdir=wd, owns_workdir=owns)
    raise AssertionError("unreachable")


def _environment(wd: Path, port: int, grpc_port: int, memory_db: bool,
                 extra_env: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(PHOENIX_WORKING_DIR=str(wd), PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port),
               PHOENIX_GRPC_PORT=str(grpc_port), PHOENIX_TELEMETRY_ENABLED="false",
               PHOENIX_ALLOW_EXTERNAL_RESOURCES="false")
    if memory_db:
        env["PHOENIX_SQL_DATABASE_URL"] = "sqlite:///:memory:"
    env.update(extra_env or {})
    return env


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
