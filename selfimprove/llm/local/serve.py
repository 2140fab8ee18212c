"""Serve a local model over the OpenAI API with llama-server, on a free loopback port.

`start_local_model` is for tests, the demo and benchmarks: the server lives as long as the process (or the `with`
block). `serve_detached`/`stop_detached` are for the `selfimprove local-model serve|stop` commands: the server keeps
running in the background and its pid, URL and log are recorded in `<cache>/servers/<name>.json`; stop checks the
pid still belongs to that llama-server before signalling it.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.launcher import ChildServer, EarlyExit, ServerHandle, free_port, launch
from selfimprove.llm.local.assemble import model_path
from selfimprove.llm.local.build import find_server_binary
from selfimprove.llm.local.catalog import cache_root, lookup_model

SETUP_HINT = "run `make setup-real` (or `selfimprove local-model setup {name}`) first"


@dataclass(frozen=True)
class ServerOptions:
    """llama-server's knobs. `max_tokens` caps generation for requests that set none (phoenix-evals sets none;
    a small model can loop inside a JSON string until the context is full). `threads` None: the idle cores."""

    threads: int | None = None
    context: int = 8192
    max_tokens: int = 1024
    timeout_s: float = 180.0


class LocalModelServer(ServerHandle):
    """A running llama-server. `base_url` is the OpenAI base URL (…/v1); `model` is the name requests use."""

    def __init__(self, child: ChildServer, model: str):
        super().__init__(child)
        self.model = model

    @property
    def base_url(self) -> str:
        return self.child.url + "/v1"

    def __repr__(self) -> str:
        return f"LocalModelServer(model={self.model!r}, {self.child!r})"


@dataclass(frozen=True)
class DetachedServer:
    """What `local-model serve` records about a background server."""

    model: str
    pid: int
    url: str
    log: str
    binary: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def server_command(name: str, port: int, options: ServerOptions) -> list[str]:
    """The llama-server argv for model `name`; raises UsageError when the binary or the model is not set up."""
    model = lookup_model(name)
    binary = find_server_binary()
    if binary is None:
        raise UsageError("llama-server is not built on this machine", hint=SETUP_HINT.format(name=name))
    path = model_path(model)
    if not path.is_file():
        raise UsageError(f"local model {name} is not assembled ({path} is missing)",
                         hint=SETUP_HINT.format(name=name))
    threads = options.threads or default_threads()
    return [str(binary), "-m", str(path), "--alias", model.name, "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-np", "1", "-c", str(options.context), "-n", str(options.max_tokens),
            "--jinja", "--no-webui"]


def default_threads() -> int:
    """The cores other processes leave idle (1-minute load average), at least 1: generation on a core another
    process keeps busy is slower than on one fewer core (measured: 12.8 tok/s on 1 thread vs 5 on 2)."""
    cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def start_local_model(name: str, options: ServerOptions = ServerOptions(), *, log_dir: Path | None = None,
                      detach: bool = False) -> LocalModelServer:
    """Start llama-server for `name` and return once `/health` answers 200 (the model is loaded)."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="selfimprove-llama-"))
    for attempt in range(2):  # a free port can be taken between pick and bind
        port = free_port()
        command = server_command(name, port, options)
        try:
            child = launch(command, name=f"llama-server ({name})", url=f"http://127.0.0.1:{port}",
                           health_path="/health", log_path=log_dir / f"llama-server-{name}.log",
                           timeout=options.timeout_s, detach=detach,
                           slow_hint="a loaded machine slows the model load; raise the timeout",
                           exit_hint="see the log; a binary built on another CPU crashes: delete the cache "
                                     "folder and run setup again")
        except EarlyExit as exc:
            if attempt == 0 and "address already in use" in exc.tail.lower():
                continue
            raise
        return LocalModelServer(child, name)
    raise AssertionError("unreachable")


def _state_path(name: str) -> Path:
    return cache_root() / "servers" / f"{name}.json"


def serve_detached(name: str, options: ServerOptions = ServerOptions()) -> DetachedServer:
    """Start a background server for `name` unless one is already recorded and alive (then return that one)."""
    running = detached_server(name)
    if running is not None:
        return running
    log_dir = cache_root() / "servers"
    child = start_local_model(name, options, log_dir=log_dir, detach=True)
    state = DetachedServer(model=name, pid=child.pid, url=child.url, log=str(child.log_path),
                           binary=str(find_server_binary()))
    path = _state_path(name)
    path.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    return state


def detached_server(name: str) -> DetachedServer | None:
    """The recorded background server for `name`, if its process is still that llama-server (else None, and a
    stale record is removed)."""
    path = _state_path(name)
    try:
        state = DetachedServer(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if _is_llama_server(state.pid, state.binary):
        return state
    path.unlink(missing_ok=True)
    return None


def stop_detached(name: str, grace: float = 10.0) -> DetachedServer | None:
    """Stop the background server for `name`; returns what was stopped (None: nothing was running)."""
    state = detached_server(name)
    if state is None:
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _is_llama_server(state.pid, state.binary):
        if time.monotonic() > deadline:
            os.kill(state.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    _state_path(name).unlink(missing_ok=True)
    return state


def _is_llama_server(pid: int, binary: str) -> bool:
    """True while `pid` is alive and runs `binary` (a recycled pid is never signalled)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie: exited, waiting for its parent
        return False
    return binary in argv[:2]  # argv[1] when the binary is a script run by its interpreter


def require_running(name: str) -> DetachedServer:
    state = detached_server(name)
    if state is None:
        raise SelfimproveError(f"no local {name} server is running",
                               hint=f"start one: selfimprove local-model serve {name}")
    return state
