"""kill -9 in a stage, then re-run it (docs/reliability.md, "Crash and resume"): the re-run finishes, no LLM call is
paid twice beyond those in flight at the kill (counted by the simulator), and no artifact is half-written (every
run verifies, every JSON artifact parses). Real Phoenix, the simulator over HTTP, the CLI in a child process."""

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate, write_candidates
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import Policy
from selfimprove.demo.run import KEY_ENV, demo_config
from selfimprove.sim import default_policy, start_server
from selfimprove.sim.traffic import make_traffic
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run

pytestmark = pytest.mark.phoenix
CONCURRENCY = 8  # evaluate.concurrency: the most calls in flight at a kill (update's scorer uses it too)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def spawn(*args) -> subprocess.Popen:
    env = dict(os.environ, SELFIMPROVE_NO_PROGRESS="1")
    return subprocess.Popen([sys.executable, "-c", "from selfimprove.cli.app import main; main()",
                             *[str(a) for a in args]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 90) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; the test fails if the process finished first."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_nothing_half_written(root: Path) -> None:
    """Every run verifies (each recorded artifact matches its digest) and every JSON file outside the call cache
    parses. Temp files of atomic writes (.NAME.*.tmp) may be left by the kill; no reader ever opens them."""
    ws = Workspace(root)
    for run in ws.runs("support"):
        verify_run(run)
        for path in run.path.rglob("*.json"):
            if "cache" not in path.relative_to(run.path).parts and not path.name.startswith("."):
                json.loads(path.read_text())


def paid_twice(sim, run) -> int:
    """Calls the simulator answered 200 beyond the distinct calls in the run's cache."""
    cached = len(list((run.path / "cache" / "llm").glob("??/*.json")))
    return sim.stats()["by_status"].get("200", 0) - cached


@pytest.fixture(scope="module")
def sim():
    server = start_server("support", seed=0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pulled(phoenix, sim, tmp_path_factory):
    """A workspace with 40 production calls in Phoenix, pulled and snapshotted (no LLM call spent yet)."""
    root = tmp_path_factory.mktemp("crash-template")
    os.environ.setdefault(KEY_ENV, "dummy")
    make_traffic("support", 40, phoenix_url=phoenix.url, project="crash-resume", sim_base_url=sim.base_url, seed=1)
    (root / "configs").mkdir()
    (root / "configs" / "support.toml").write_text(demo_config(
        phoenix_url=phoenix.url, project="crash-resume", sim_base_url=sim.base_url, primary="policy_compliance",
        target="support"))
    args = ["--root", root, "--set", f"evaluate.concurrency={CONCURRENCY}"]
    res = cli("pull", "--since", "2000-01-01", *args)
    assert res.exit_code == 0, res.output
    assert cli("snapshot", *args).exit_code == 0
    return root


@pytest.fixture
def ws(pulled, tmp_path, sim, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "dummy")
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    dest = tmp_path / "ws"
    shutil.copytree(pulled, dest)
    sim.configure(latency_ms=25)
    sim.reset_stats()
    yield dest
    sim.configure(latency_ms=0)


def test_kill_in_update_then_rerun(ws, sim):
    args = ["--root", ws, "--set", f"evaluate.concurrency={CONCURRENCY}", "--set", "update.max_calls=200"]
    kill_when(spawn("update", "--yes", *args), lambda: sim.stats()["requests"] >= 40)
    run = Workspace(ws).open_run("support")
    assert run.record("update") is None  # the killed stage left no record
    assert_nothing_half_written(ws)
    paid_before = sim.stats()["by_status"]["200"]
    sim.configure(latency_ms=0)  # the kill is done: the re-run may go fast
    res = cli("update", "--yes", "--json", *args)
    assert res.exit_code == 0, res.output
    assert run.record("update") is not None and json.loads(res.stdout)["candidates"]
    twice = paid_twice(sim, run)
    print(f"[figures] update: {paid_before} calls paid before the kill, {twice} paid twice")  # docs/reliability.md
    assert 0 <= twice <= CONCURRENCY, (paid_before, sim.stats())
    assert_nothing_half_written(ws)


def test_kill_in_evaluate_then_rerun(ws, sim):
    args = ["--root", ws, "--set", f"evaluate.concurrency={CONCURRENCY}", "--set", "update.max_calls=200"]
    sim.configure(latency_ms=0)
    assert cli("update", "--yes", *args).exit_code == 0
    sim.configure(latency_ms=25)
    sim.reset_stats()
    run = Workspace(ws).open_run("support")
    for c in (run.path / "cache" / "llm").glob("??/*.json"):  # only evaluate's calls in the cache from here
        c.unlink()
    ev = ["evaluate", "--yes", "--candidates", "all", "--set", "evaluate.min_effect=0.01", *args]
    kill_when(spawn(*ev), lambda: sim.stats()["requests"] >= 30)
    assert run.record("evaluate") is None and not (run.path / "report.json").exists()
    assert_nothing_half_written(ws)
    sim.configure(latency_ms=0)
    res = cli(*ev, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["spent"]["cache_hits"] > 0  # the calls finished before the kill were not paid again
    twice = paid_twice(sim, run)
    print(f"[figures] evaluate: {out['spent']['cache_hits']} calls answered from the cache on the re-run, "
          f"{twice} paid twice")
    assert 0 <= twice <= CONCURRENCY
    assert_nothing_half_written(ws)


class StallingProxy:
    """An HTTP proxy that forwards every request to `target` except those whose path contains `hold`, which it
    holds without answering: the stage that sent one is then surely in flight when the test kills it."""

    def __init__(self, target: str, hold: str):
        parts = urlsplit(target)
        self.held = threading.Event()
        release = threading.Event()
        self._release = release
        held = self.held

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self):
                if hold in self.path:
                    held.set()
                    release.wait(60)
                    with contextlib.suppress(OSError):  # the client was killed meanwhile
                        self.send_error(503)
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._release.set()
        self._server.shutdown()


def test_kill_in_pull_then_rerun(pulled, phoenix, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    root = tmp_path / "ws"
    (root / "configs").mkdir(parents=True)
    shutil.copy(pulled / "configs" / "support.toml", root / "configs" / "support.toml")
    proxy = StallingProxy(phoenix.url, hold="span_annotations")  # past its spans, before the run is recorded
    try:
        kill_when(spawn("pull", "--since", "2000-01-01", "--root", root, "--set",
                        f"telemetry.phoenix.endpoint={proxy.url}"), proxy.held.is_set)
    finally:
        proxy.close()
    assert all(run.record("pull") is None for run in Workspace(root).runs("support"))
    assert_nothing_half_written(root)
    res = cli("pull", "--since", "2000-01-01", "--root", root, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["spans"] == 40  # nothing lost: the cursor did not move at the kill
    assert_nothing_half_written(root)
    assert cli("snapshot", "--root", root).exit_code == 0  # the latest run is the complete one
    assert cli("log", "--root", root).exit_code == 0


def test_kill_in_snapshot_then_rerun(ws, sim):
    """snapshot --diverse embeds the inputs: held at its embeddings request, it is killed mid-stage."""
    run = Workspace(ws).open_run("support")
    before = run.record("snapshot")
    proxy = StallingProxy(sim.base_url.removesuffix("/v1"), hold="/embeddings")
    embed = ["--set", "split.embeddings.model=sim-embed", "--set", f"split.embeddings.api_key_env={KEY_ENV}"]
    try:
        kill_when(spawn("snapshot", "--root", ws, "--diverse", "--max-samples", "20", "--force", *embed,
                        "--set", f"split.embeddings.base_url={proxy.url}/v1"), proxy.held.is_set)
    finally:
        proxy.close()
    assert run.record("snapshot") == before  # the old record stands until a new one is complete
    assert_nothing_half_written(ws)
    res = cli("snapshot", "--root", ws, "--diverse", "--max-samples", "20", "--force", "--json", *embed,
              "--set", f"split.embeddings.base_url={sim.base_url}")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["diverse_method"] == "embeddings"  # not the TF-IDF fallback of a failing endpoint
    assert not any("tf-idf" in w.lower() for w in out["warnings"])
    assert_nothing_half_written(ws)


def test_kill_in_promote_then_rerun(tmp_path, sim, phoenix, monkeypatch):
    """promote --push-phoenix, held at Phoenix's prompts API: the build is written and the ref moved, the stage
    is not recorded. The re-run finishes it with the same build: no second build, verify passes. (A run whose
    evidence passes the gate for sure: 50 held-out samples, a candidate written from the judges' feedback.)"""
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    sim.configure(latency_ms=0)
    _, run, *_ = build_run(tmp_path, sim.base_url, n=50)
    better = candidate(Policy(**default_policy("support")).model_copy(update={"system_prompt": BETTER_PROMPT}))
    write_candidates(run, [better], best=better.id)
    assert cli("evaluate", "--root", tmp_path, "--yes", "--concurrency", "16").exit_code == 0
    assert cli("promote", "--root", tmp_path, "--dry-run").exit_code == 0
    proxy = StallingProxy(phoenix.url, hold="/prompts")
    try:
        kill_when(spawn("promote", "--root", tmp_path, "--push-phoenix", "--set",
                        f"telemetry.phoenix.endpoint={proxy.url}"), proxy.held.is_set)
    finally:
        proxy.close()
    assert run.record("promote") is None
    builds = sorted(p.stem for p in (tmp_path / "prompts" / "support").glob("v*.json"))
    assert builds == ["v0001", "v0002"]  # the baseline and the promoted build, written before the push
    assert_nothing_half_written(tmp_path)
    res = cli("promote", "--root", tmp_path, "--push-phoenix", "--json", "--set",
              f"telemetry.phoenix.endpoint={phoenix.url}")
    assert res.exit_code == 0, res.output
    assert sorted(p.stem for p in (tmp_path / "prompts" / "support").glob("v*.json")) == builds  # no second build
    assert json.loads(res.stdout)["production"] == "v0002" and run.record("promote") is not None
    assert cli("verify", "--root", tmp_path).exit_code == 0
