"""The Phoenix launcher: the real server (the session fixture, which also asserts a clean stop) and, for process-lifecycle
edge cases (never healthy, ignores SIGTERM, parent dies), a stand-in `phoenix.server.main` module that really
serves `/healthz` on PHOENIX_PORT the way the launcher expects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from selfimprove.core.errors import SelfimproveError
from selfimprove.telemetry.phoenix_server import PYTHON_ENV, free_port, phoenix_command, start_phoenix

STAND_IN = textwrap.dedent('''
    import json, os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    mode = os.environ["STAND_IN_MODE"]
    with open(os.environ["STAND_IN_REPORT"], "w") as f:
        json.dump({"pid": os.getpid(), "argv": sys.argv, "env": dict(os.environ)}, f)
    print("stand-in starting in mode", mode, flush=True)
    if mode == "crash":
        sys.exit("stand-in: cannot start")
    if mode == "hang":
        time.sleep(600)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"OK")
        def log_message(self, *a):
            pass
    HTTPServer(("127.0.0.1", int(os.environ["PHOENIX_PORT"])), Health).serve_forever()
''')


@pytest.fixture
def stand_in(tmp_path):
    """(extra_env factory, report reader) for a stand-in `phoenix.server.main` run by this venv's python."""
    pkg = tmp_path / "pkg" / "phoenix" / "server"
    pkg.mkdir(parents=True)
    for d in (pkg.parent, pkg):
        (d / "__init__.py").write_text("")
    (pkg / "main.py").write_text(STAND_IN)
    report = tmp_path / "report.json"

    def env(mode: str) -> dict[str, str]:
        return {"PYTHONPATH": str(tmp_path / "pkg"), "STAND_IN_MODE": mode, "STAND_IN_REPORT": str(report)}

    def read() -> dict:
        return json.loads(report.read_text())

    return env, read


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.phoenix
def test_session_server_is_healthy_on_loopback(phoenix):
    with urllib.request.urlopen(phoenix.url + "/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(phoenix.url + "/arize_phoenix_version", timeout=5) as r:
        assert r.read().decode().strip()[0].isdigit()
    assert phoenix.url.startswith("http://127.0.0.1:") and phoenix.is_running()
    assert phoenix.log_path.stat().st_size > 0
    assert not (phoenix.workdir / "phoenix.db").exists()  # the session server keeps sqlite in memory
    assert 0 < phoenix.startup_seconds < 120


def test_environment_is_set_and_inherited_phoenix_settings_dropped(stand_in, tmp_path, monkeypatch):
    env, read = stand_in
    monkeypatch.setenv("PHOENIX_SQL_DATABASE_URL", "postgresql://somewhere/prod")
    monkeypatch.setenv("PHOENIX_ENABLE_AUTH", "true")
    port, grpc = free_port(), free_port("")
    with start_phoenix(python=sys.executable, workdir=tmp_path / "wd", port=port, grpc_port=grpc,
                       extra_env=env("serve"), timeout=20) as server:
        seen = read()
        assert server.url == f"http://127.0.0.1:{port}" and server.grpc_port == grpc
    child = seen["env"]
    assert child["PHOENIX_WORKING_DIR"] == str(tmp_path / "wd")
    assert (child["PHOENIX_HOST"], child["PHOENIX_PORT"], child["PHOENIX_GRPC_PORT"]) == (
        "127.0.0.1", str(port), str(grpc))
    assert child["PHOENIX_TELEMETRY_ENABLED"] == "false"
    assert child["PHOENIX_ALLOW_EXTERNAL_RESOURCES"] == "false"
    assert "PHOENIX_SQL_DATABASE_URL" not in child and "PHOENIX_ENABLE_AUTH" not in child
    assert seen["argv"][1:] == ["serve"]
    assert (tmp_path / "wd").is_dir()  # a given work dir is kept
    assert "stand-in starting" in (tmp_path / "wd" / "phoenix.log").read_text()


def test_exit_before_healthy_names_the_log_and_its_tail(stand_in, tmp_path):
    env, _ = stand_in
    with pytest.raises(SelfimproveError) as info:
        start_phoenix(python=sys.executable, workdir=tmp_path / "wd", extra_env=env("crash"), timeout=20)
    message = info.value.message
    assert str(tmp_path / "wd" / "phoenix.log") in message
    assert "stand-in: cannot start" in message and "exited with code 1" in message


def test_timeout_raises_with_log_tail_and_kills_the_child(stand_in, tmp_path):
    env, read = stand_in
    started = time.monotonic()
    with pytest.raises(SelfimproveError) as info:
        start_phoenix(python=sys.executable, extra_env=env("hang"), timeout=2)
    assert time.monotonic() - started < 10
    assert "not healthy" in info.value.message and "phoenix.log" in info.value.message
    assert "stand-in starting in mode hang" in info.value.message
    assert _wait_dead(read()["pid"])


def test_stop_escalates_to_sigkill(stand_in):
    env, read = stand_in
    server = start_phoenix(python=sys.executable, extra_env=env("stubborn"), timeout=20)
    started = time.monotonic()
    server.stop(grace=0.5)
    assert time.monotonic() - started < 5
    assert not server.is_running() and not _alive(read()["pid"])
    assert not server.workdir.exists()
    server.stop()  # idempotent


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_child_outlives_its_parent(stand_in, tmp_path, ending):
    """atexit stops the server on a normal exit; PR_SET_PDEATHSIG when the parent is SIGKILLed."""
    env, read = stand_in
    script = textwrap.dedent(f'''
        import os, signal, sys
        from selfimprove.telemetry.phoenix_server import start_phoenix
        server = start_phoenix(python=sys.executable, extra_env={env("serve")!r}, timeout=20)
        print(server.pid, flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
    ''')
    subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True, check=False)
    assert _wait_dead(read()["pid"])


def test_python_resolution_order(monkeypatch, tmp_path):
    import selfimprove.telemetry.phoenix_server as mod

    assert phoenix_command(sys.executable)[0] == sys.executable  # argument first
    monkeypatch.setenv(PYTHON_ENV, sys.executable)
    assert phoenix_command() == [sys.executable, "-m", "phoenix.server.main", "serve"]
    monkeypatch.delenv(PYTHON_ENV)
    if mod._REPO_VENV_PYTHON.exists():
        assert phoenix_command()[0] == str(mod._REPO_VENV_PYTHON)
    monkeypatch.setattr(mod, "_REPO_VENV_PYTHON", tmp_path / "missing" / "python")
    exe = tmp_path / "bin" / "phoenix"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(exe.parent))
    assert phoenix_command() == [str(exe), "serve"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SelfimproveError, match="no Phoenix server installation") as info:
        phoenix_command()
    assert "make setup" in info.value.hint
    with pytest.raises(SelfimproveError, match="not found"):
        phoenix_command(tmp_path / "nope" / "python")
    monkeypatch.setenv(PYTHON_ENV, str(tmp_path / "nope"))
    with pytest.raises(SelfimproveError, match=PYTHON_ENV):
        phoenix_command()
    assert os.environ.get(PYTHON_ENV) == str(tmp_path / "nope")
