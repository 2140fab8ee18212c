"""The simulator's HTTP server: OpenAI-compatible endpoints on loopback, started in a thread or a subprocess.

Endpoints: `POST /v1/chat/completions`, `POST /v1/embeddings` (see `embeddings`), `GET /v1/models`,
`GET /sim/stats`, `GET /sim/requests` (the request log: the last `REQUEST_LOG` chat-completion bodies as received,
oldest first, so a test can see exactly what a replay sent), `POST /sim/reset` (counters and request log),
`POST /sim/config` (change knobs at runtime, e.g. turn on 500s mid-run), `GET /healthz`, and the Batch API
(`/v1/files`, `/v1/batches`: see `batches`); a batch's lines are answered, counted and logged like online calls.
"""

from __future__ import annotations

import collections
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfimprove.llm.endpoint import SIMULATOR_OWNER
from selfimprove.sim import models
from selfimprove.sim.batches import BatchStore
from selfimprove.sim.embeddings import BadEmbeddingsRequest, embeddings_response
from selfimprove.sim.faults import FaultInjector, SimConfig, Stats
from selfimprove.sim.hidden import load_world

MODEL_IDS = ("sim-small", "sim-large", "sim-judge", "sim-optimizer", "sim-embed")
REQUEST_LOG = 5000


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, addr, world: str, config: SimConfig):
        super().__init__(addr, _Handler)
        self.world = load_world(world)
        self.config = config
        self.faults = FaultInjector(config)
        self.stats = Stats()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_LOG)
        self.batches = BatchStore(self.batch_line, config.as_dict)

    def batch_line(self, body: dict[str, Any]) -> tuple[int, Any]:
        """One batch line, answered as the online endpoint answers it (no transport faults: a batch has none)."""
        endpoint, model = "batch:/v1/chat/completions", body.get("model")
        self.requests.append(body)
        try:
            payload = models.complete(body, self.world, self.config.as_dict())
        except models.BadRequest as e:
            self.stats.record(endpoint, model, 400)
            return 400, {"error": {"message": str(e), "type": "invalid_request_error"}}
        self.stats.record(endpoint, model, 200, payload["usage"])
        return 200, payload

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out or hung up mid-response is expected (slow_rate, drop_rate); stay quiet
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes; without NODELAY, Nagle + delayed ACK add ~40 ms per response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the simulator is used by tests
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _batch_api(self, method: str, path: str) -> bool:
        """Serve a Files or Batches request (sim/batches.py); False when `path` is not one."""
        parts = path.removeprefix("/v1").strip("/").split("/")
        if parts[0] not in ("files", "batches"):
            return False
        route = f"{method} /v1/{parts[0]}" + ("/:id" if len(parts) > 1 else "") + "".join("/" + p for p in parts[2:])
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
        status, payload = self.server.batches.route(route, parts, raw, self.headers.get("Content-Type", ""),
                                                    self.path.partition("?")[2])
        self.server.stats.record(route, None, status)
        if isinstance(payload, bytes):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            self._send(status, payload)
        return True

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if self._batch_api("GET", path):
            return
        if path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": SIMULATOR_OWNER}
                    for m in MODEL_IDS]
            self._send(200, {"object": "list", "data": data})
        elif path == "/sim/stats":
            snap = self.server.stats.snapshot()
            snap["world"] = self.server.world.name
            snap["config"] = self.server.config.as_dict()
            self._send(200, snap)
        elif path == "/sim/requests":
            self._send(200, {"object": "list", "data": list(self.server.requests)})
        elif path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if self._batch_api("POST", path):
            return
        try:
            body = self._body()
        except (ValueError, UnicodeDecodeError):
            self.server.stats.record(path, None, 400)
            return self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
        if path in ("/v1/chat/completions", "/chat/completions"):
            return self._chat(body)
        if path in ("/v1/embeddings", "/embeddings"):
            return self._embeddings(body)
        if path == "/sim/config":
            try:
                self.server.config.update(**body)
            except ValueError as e:
                return self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
            if "seed" in body:
                self.server.faults.reseed()
            return self._send(200, self.server.config.as_dict())
        if path == "/sim/reset":
            self.server.stats.reset()
            self.server.requests.clear()
            return self._send(200, {"ok": True})
        self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    def _fault(self, endpoint: str, model: str | None) -> Any:
        """Decide this request's fault; answer it here (drop, 500, 429) and return None, or return the Fault."""
        fault = self.server.faults.decide(model)
        stats = self.server.stats
        if fault.kind == "drop":
            stats.record(endpoint, model, "dropped")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if fault.kind == "error":
            stats.record(endpoint, model, 500)
            self._send(500, {"error": {"message": "simulated server error", "type": "server_error"}})
            return None
        if fault.kind == "throttle":
            stats.record(endpoint, model, 429)
            headers = {"Retry-After": str(max(1, math.ceil(fault.retry_after_s))),
                       "retry-after-ms": str(max(1, math.ceil(fault.retry_after_s * 1000)))}
            self._send(429, {"error": {"message": "simulated rate limit", "type": "rate_limit_error"}}, headers)
            return None
        return fault

    def _embeddings(self, body: Any) -> None:
        endpoint = "/v1/embeddings"
        model = body.get("model") if isinstance(body, dict) else None
        fault = self._fault(endpoint, model)
        if fault is None:
            return
        try:
            payload = embeddings_response(body)
        except BadEmbeddingsRequest as e:
            self.server.stats.record(endpoint, model, 400)
            return self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
        if fault.delay_s:
            time.sleep(fault.delay_s)
        self.server.stats.record(endpoint, model, 200, payload["usage"])
        self._send(200, payload)

    def _chat(self, body: dict[str, Any]) -> None:
        endpoint = "/v1/chat/completions"
        model = body.get("model") if isinstance(body, dict) else None
        self.server.requests.append(body)
        fault = self._fault(endpoint, model)
        if fault is None:
            return
        stats = self.server.stats
        try:
            payload = models.complete(body, self.server.world, self.server.config.as_dict())
        except models.BadRequest as e:
            stats.record(endpoint, model, 400)
            return self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
        if fault.delay_s:
            time.sleep(fault.delay_s)
        stats.record(endpoint, model, 200, payload["usage"])
        self._send(200, payload)


class SimServer:
    """A running simulator. `base_url` is what an OpenAI client needs; use as a context manager or call stop()."""

    def __init__(self, url: str, *, httpd: _Server | None = None, thread: threading.Thread | None = None,
                 proc: subprocess.Popen | None = None):
        self.url = url.rstrip("/")
        self.base_url = self.url + "/v1"
        self.port = int(self.url.rsplit(":", 1)[1])
        self._httpd, self._thread, self._proc = httpd, thread, proc

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/sim/stats")

    def reset_stats(self) -> None:
        """Zero the counters and clear the request log."""
        self._call("POST", "/sim/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        """The request log: the last chat-completion request bodies the simulator received, oldest first."""
        return self._call("GET", "/sim/requests")["data"]

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs at runtime (error_rate, throttle_rate, latency_ms, …); returns the whole config."""
        return self._call("POST", "/sim/config", knobs)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> SimServer:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimServer({self.base_url!r})"


def serve(world: str, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """A bound (not yet serving) server; call serve_forever() on it."""
    return _Server((host, port), world, config)


def start_server(world: str = "support", *, seed: int = 0, port: int = 0, latency_ms: float = 0,
                 jitter_ms: float = 0, error_rate: float = 0.0, rate_limit: float | None = None,
                 mode: str = "thread", host: str = "127.0.0.1", **knobs: Any) -> SimServer:
    """Start the simulator for `world` on a free loopback port (or `port`), in a thread or a subprocess."""
    config = SimConfig()
    config.update(seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, error_rate=error_rate,
                  rate_limit=rate_limit, **knobs)
    load_world(world)  # fail fast on an unknown world, in this process
    if mode == "thread":
        httpd = serve(world, config, host, port)
        thread = threading.Thread(target=httpd.serve_forever, name=f"sim-{world}", daemon=True)
        thread.start()
        return SimServer(f"http://{host}:{httpd.server_address[1]}", httpd=httpd, thread=thread)
    if mode != "subprocess":
        raise ValueError(f"mode must be 'thread' or 'subprocess', not {mode!r}")
    cmd = [sys.executable, "-m", "selfimprove.cli.sim", "serve", "--world", world, "--host", host, "--port", str(port),
           "--config-json", json.dumps(config.as_dict())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"simulator subprocess did not print its base_url (got {line!r})")
    return SimServer(line.removesuffix("/v1"), proc=proc)
