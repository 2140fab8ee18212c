"""OpenAIChat through the real openai SDK against real HTTP servers on loopback.

Most tests use the project's simulator (`selfimprove.sim`), whose counters say what the server really saw.
Two properties the simulator does not expose (requests in flight, the Authorization header) are checked
against `InFlightServer`, a small stdlib server that really implements POST /v1/chat/completions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfimprove.core.errors import UsageError
from selfimprove.llm import (
    Budget,
    BudgetExceeded,
    CallCache,
    ChatModel,
    Ledger,
    LLMUnavailable,
    OpenAIChat,
    run_many,
)
from selfimprove.llm.openai_chat import PLACEHOLDER_KEY, resolve_api_key
from selfimprove.sim import start_server

PRICES = {"sim-small": {"input": 0.5, "output": 1.5}}


def requests_for(n, **params):
    return [{"messages": [{"role": "user", "content": f"Order #{i} arrived broken, what now?"}], **params}
            for i in range(n)]


@pytest.fixture(scope="module")
def sim_server():
    server = start_server(world="support", seed=0)
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server):
    """The module's simulator with default knobs and zeroed counters."""
    sim_server.configure(seed=0, latency_ms=0, error_rate=0.0, throttle_rate=0.0, slow_rate=0.0)
    sim_server.reset_stats()
    return sim_server


def server_requests(server) -> int:
    return server.stats()["requests"]


def test_rerun_is_free_and_byte_identical(sim, tmp_path):
    ledger = Ledger(PRICES)
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=tmp_path, ledger=ledger,
                      defaults={"temperature": 0.0, "max_tokens": 200})
    assert isinstance(chat, ChatModel)
    first = run_many(chat, requests_for(12), concurrency=4)
    assert server_requests(sim) == 12 and len(CallCache(tmp_path)) == 12
    assert all(r.ok and r.text and not r.cached for r in first)
    second = run_many(chat, requests_for(12), concurrency=4)
    assert server_requests(sim) == 12  # nothing was sent the second time
    assert all(r.cached for r in second)
    strip = {"cached"}
    assert [json.dumps(r.model_dump(exclude=strip), sort_keys=True) for r in second] == [
        json.dumps(r.model_dump(exclude=strip), sort_keys=True) for r in first
    ]
    snap = ledger.snapshot()
    assert (snap.calls, snap.succeeded, snap.cache_hits) == (12, 12, 12)
    sim_tokens = sim.stats()["tokens"]["sim-small"]
    assert (snap.prompt_tokens, snap.completion_tokens) == (sim_tokens["prompt"], sim_tokens["completion"])
    assert snap.cost_usd == pytest.approx(sum(r.cost for r in first))
    assert first[0].cost == pytest.approx((first[0].usage.prompt_tokens * 0.5 + first[0].usage.completion_tokens * 1.5) / 1e6)


def test_sample_index_asks_for_distinct_samples(sim, tmp_path):
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=tmp_path)
    reqs = [{"messages": requests_for(1)[0]["messages"], "temperature": 1.0, "sample_index": i} for i in range(3)]
    results = run_many(chat, reqs)
    assert server_requests(sim) == 3 and len({r.key for r in results}) == 3
    run_many(chat, reqs)
    assert server_requests(sim) == 3


def test_each_call_is_on_disk_before_its_result_is_returned(sim, tmp_path):
    cache = CallCache(tmp_path)
    seen = []

    def progress(done, total, result):
        seen.append(result.key in cache)

    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=cache)
    run_many(chat, requests_for(10), concurrency=3, progress=progress)
    assert seen == [True] * 10


CRASH_SCRIPT = """
import sys
from selfimprove.llm import OpenAIChat, run_many
chat = OpenAIChat(sys.argv[1], "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=sys.argv[2], concurrency=4)
reqs = [{"messages": [{"role": "user", "content": f"Order #{i} arrived broken, what now?"}]} for i in range(40)]
run_many(chat, reqs, progress=lambda d, t, r: print(r.key, flush=True))
"""


def test_killed_midway_loses_nothing_and_pays_once(tmp_path):
    sim = start_server(world="support", seed=0, latency_ms=60)
    try:
        proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, sim.base_url, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True)
        finished = [proc.stdout.readline().strip() for _ in range(10)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cache = CallCache(tmp_path)
        assert all(k.startswith("sha256:") and k in cache for k in finished)  # every reported call is on disk
        ledger = Ledger()
        chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=cache, ledger=ledger,
                          concurrency=4)
        results = run_many(chat, requests_for(40))
        assert all(r.ok for r in results)
        hits = sum(r.cached for r in results)
        snap = ledger.snapshot()
        assert 10 <= hits < 40 and snap.cache_hits == hits and snap.calls == 40 - hits
        # paid twice: only the calls in flight at the kill (at most the concurrency)
        assert server_requests(sim) - 40 <= 4
    finally:
        sim.stop()


@pytest.mark.parametrize("error_rate,throttle_rate,max_retries", [(0.05, 0.05, 4), (0.4, 0.0, 1)])
def test_faults_every_row_finishes_or_fails_and_totals_reconcile(tmp_path, error_rate, throttle_rate, max_retries):
    sim = start_server(world="support", seed=3, error_rate=error_rate, throttle_rate=throttle_rate,
                       retry_after_s=0.05)
    try:
        ledger = Ledger(PRICES)
        chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=tmp_path,
                          ledger=ledger, concurrency=32, max_retries=max_retries)
        results = run_many(chat, requests_for(150))
        stats = sim.stats()
    finally:
        sim.stop()
    assert len(results) == 150 and all(r.ok != bool(r.error) for r in results)
    failed = [r for r in results if r.error]
    status = stats["by_status"]
    if max_retries == 1:
        assert failed and all("InternalServerError" in r.error for r in failed)
    else:
        assert status["500"] and status["429"]  # both faults happened and were retried away or reported
    snap = ledger.snapshot()
    assert snap.calls == stats["requests"]
    assert snap.succeeded == status.get("200", 0) == 150 - len(failed) == len(CallCache(tmp_path))
    assert snap.failed == status.get("500", 0) + status.get("429", 0)
    assert (snap.prompt_tokens, snap.completion_tokens) == (stats["tokens"]["sim-small"]["prompt"],
                                                           stats["tokens"]["sim-small"]["completion"])
    assert snap.cost_usd == pytest.approx(sum(r.cost for r in results))


def test_budget_is_never_exceeded(sim, tmp_path):
    ledger = Ledger(PRICES, Budget(max_calls=10))
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", cache=tmp_path, ledger=ledger)
    with pytest.raises(BudgetExceeded) as err:
        run_many(chat, requests_for(25), concurrency=4)
    assert server_requests(sim) <= 10 and ledger.snapshot().calls <= 10
    finished = [r for r in err.value.partial if r is not None]
    assert 0 < len(finished) <= 10 and all(r.ok for r in finished)
    # cached calls are free: replaying the finished ones passes under the exhausted budget
    again = run_many(chat, [requests_for(25)[i] for i, r in enumerate(err.value.partial) if r is not None])
    assert all(r.cached for r in again) and server_requests(sim) <= 10

    prompt_price = {"sim-small": {"input": 100.0, "output": 100.0}}
    ledger = Ledger(prompt_price, Budget(max_usd=0.05))
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", ledger=ledger,
                      defaults={"max_tokens": 60})
    with pytest.raises(BudgetExceeded):
        run_many(chat, requests_for(200, temperature=0.5), concurrency=8)
    assert 0 < ledger.snapshot().cost_usd <= 0.05


class InFlightServer(ThreadingHTTPServer):
    """POST /v1/chat/completions with usage; counts requests in flight; optional required key (else 401)."""

    daemon_threads = True

    def __init__(self, latency_s=0.05, required_key=None, fail_status=None):
        super().__init__(("127.0.0.1", 0), _InFlightHandler)
        self.latency_s, self.required_key, self.fail_status = latency_s, required_key, fail_status
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self):
        self.shutdown()
        self.server_close()


class _InFlightHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests += 1
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if srv.required_key and self.headers.get("Authorization") != f"Bearer {srv.required_key}":
                return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            time.sleep(srv.latency_s)
            if srv.fail_status == 200:  # a 200 that is not a chat completion
                return self._send(200, {"object": "chat.completion", "choices": []})
            if srv.fail_status:
                return self._send(srv.fail_status, {"error": {"message": "broken", "type": "server_error"}})
            text = "echo: " + body["messages"][-1]["content"]
            self._send(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            })
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_concurrency_bound_is_respected():
    server = InFlightServer(latency_s=0.05)
    try:
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_NO_KEY", model="m", concurrency=3)
        results = run_many(chat, requests_for(24))
        assert all(r.ok for r in results) and server.requests == 24
        assert server.max_in_flight == 3
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_NO_KEY", model="m", concurrency=8)
        server.max_in_flight = 0
        run_many(chat, requests_for(24, temperature=0.1), concurrency=2)
        assert server.max_in_flight == 2
    finally:
        server.stop()


def test_bad_key_is_systemic_and_never_written(tmp_path, monkeypatch):
    secret = "sk-test-" + "x7" * 10
    server = InFlightServer(latency_s=0.0, required_key="sk-the-right-one")
    monkeypatch.setenv("SELFIMPROVE_TEST_KEY", secret)
    try:
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_KEY", model="m", cache=tmp_path)
        assert secret not in repr(chat)
        with pytest.raises(LLMUnavailable) as err:
            run_many(chat, requests_for(5))
        assert "SELFIMPROVE_TEST_KEY" in err.value.message and secret not in str(err.value)
        monkeypatch.setenv("SELFIMPROVE_TEST_KEY", "sk-the-right-one")
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_KEY", model="m", cache=tmp_path)
        assert all(r.ok for r in run_many(chat, requests_for(5)))
    finally:
        server.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert stored and b"sk-the-right-one" not in stored and secret.encode() not in stored


def test_connection_refused_is_systemic():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "SELFIMPROVE_TEST_NO_KEY", model="m", max_retries=0)
    with pytest.raises(LLMUnavailable, match="cannot reach") as err:
        run_many(chat, requests_for(10), concurrency=2)
    assert len([r for r in err.value.partial if r is not None]) == 0


def test_a_server_failing_every_call_is_systemic():
    server = InFlightServer(latency_s=0.0, fail_status=500)
    try:
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_NO_KEY", model="m", max_retries=0,
                          max_consecutive_failures=5)
        with pytest.raises(LLMUnavailable, match="5 LLM calls in a row failed"):
            run_many(chat, requests_for(50), concurrency=1)
        assert server.requests == 5  # stopped there: no new call started after the error
    finally:
        server.stop()


def test_a_malformed_response_is_a_failed_row_and_not_cached(tmp_path):
    server = InFlightServer(latency_s=0.0, fail_status=200)
    try:
        chat = OpenAIChat(server.base_url, "SELFIMPROVE_TEST_NO_KEY", model="m", cache=tmp_path)
        [result] = run_many(chat, requests_for(1))
        assert result.error and "malformed" in result.error and len(CallCache(tmp_path)) == 0
        assert chat.ledger.snapshot().failed == 1
    finally:
        server.stop()


def test_one_slow_call_times_out_as_a_row(sim):
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model="sim-small", max_retries=0, timeout=5.0)
    sim.configure(slow_rate=1.0, slow_ms=1500)
    t0 = time.perf_counter()
    [slow] = run_many(chat, [{**requests_for(1)[0], "timeout": 0.3}])
    assert slow.error and "Timeout" in slow.error and time.perf_counter() - t0 < 1.4


def test_api_key_resolution(monkeypatch):
    monkeypatch.delenv("SELFIMPROVE_TEST_NO_KEY", raising=False)
    assert resolve_api_key("http://127.0.0.1:9/v1", "SELFIMPROVE_TEST_NO_KEY") == PLACEHOLDER_KEY
    assert resolve_api_key("http://localhost:9/v1", "SELFIMPROVE_TEST_NO_KEY") == PLACEHOLDER_KEY
    with pytest.raises(UsageError, match="SELFIMPROVE_TEST_NO_KEY"):
        resolve_api_key("https://api.openai.com/v1", "SELFIMPROVE_TEST_NO_KEY")
    monkeypatch.setenv("SELFIMPROVE_TEST_NO_KEY", "sk-abc")
    assert resolve_api_key("https://api.openai.com/v1", "SELFIMPROVE_TEST_NO_KEY") == "sk-abc"
