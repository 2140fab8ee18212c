"""The simulator's `POST /v1/embeddings` (OpenAI shape, determinism, faults, stats) and the `OpenAIEmbeddings`
adapter (batches, the run's call cache, the ledger, errors), over real HTTP with the unmodified openai SDK."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import openai
import pytest

from selfimprove.core.errors import SelfimproveError
from selfimprove.llm.accounting import Budget, BudgetExceeded, Ledger
from selfimprove.llm.cache import CallCache, request_key
from selfimprove.llm.embeddings import EmbeddingsFailed, OpenAIEmbeddings, embeddings_key
from selfimprove.sim import start_server


@pytest.fixture(scope="module")
def sim():
    with start_server("support", seed=0) as s:
        yield s


@pytest.fixture()
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)


def _endpoint_calls(sim) -> int:
    return sim.stats()["by_endpoint"].get("/v1/embeddings", 0)


def test_sim_embeddings_have_the_openai_shape_and_are_deterministic(sim, client):
    texts = ["refund my order please", "please refund my order", "reset my account password"]
    before = sim.stats()
    r = client.embeddings.create(model="sim-embed", input=texts, encoding_format="float")
    assert r.object == "list" and r.model == "sim-embed" and [d.index for d in r.data] == [0, 1, 2]
    assert all(d.object == "embedding" and len(d.embedding) == 64 for d in r.data)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    v = np.array([d.embedding for d in r.data])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0] @ v[1] == pytest.approx(1.0)  # same words, other order: a bag of words
    assert abs(v[0] @ v[2]) < 0.5  # no word in common
    # the SDK's default encoding (base64 float32) decodes to the same vectors; the same text, the same vector
    b64 = client.embeddings.create(model="sim-embed", input=texts[0])
    assert np.allclose(b64.data[0].embedding, v[0], atol=1e-6)
    assert client.embeddings.create(model="sim-embed", input=[texts[0]], encoding_format="float"
                                    ).data[0].embedding == list(v[0])
    small = client.embeddings.create(model="sim-embed", input="refund", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8
    after = sim.stats()
    assert after["by_endpoint"]["/v1/embeddings"] - before["by_endpoint"].get("/v1/embeddings", 0) == 4
    assert after["tokens"]["sim-embed"]["prompt"] > before["tokens"].get("sim-embed", {}).get("prompt", 0)
    assert "sim-embed" in {m.id for m in client.models.list().data}


@pytest.mark.parametrize("bad", [{"input": ""}, {"input": []}, {"input": [1.5]}, {"input": "x", "dimensions": 0},
                                 {"input": "x", "encoding_format": "hex"}])
def test_sim_refuses_what_the_api_refuses(client, bad):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="sim-embed", **bad)


def test_sim_embeddings_honour_the_fault_knobs():
    with start_server("support", seed=0, error_rate=1.0) as sim:
        c = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            c.embeddings.create(model="sim-embed", input="hello")
        sim.configure(error_rate=0.0, throttle_rate=1.0, retry_after_s=0.01)
        with pytest.raises(openai.RateLimitError):
            c.embeddings.create(model="sim-embed", input="hello")
        sim.configure(throttle_rate=0.0, fault_models=["sim-judge"], error_rate=1.0)
        assert c.embeddings.create(model="sim-embed", input="hello").data  # faults for the judge only
        assert sim.stats()["by_model"]["sim-embed"] == {"500": 1, "429": 1, "200": 1}


def test_adapter_batches_caches_and_books(sim, tmp_path):
    texts = [f"order {i} arrived broken" for i in range(5)] + ["", "x" * 20_000]
    before = _endpoint_calls(sim)
    ledger = Ledger({"sim-embed": {"input": 0.02, "output": 0.0}})
    with OpenAIEmbeddings(sim.base_url, model="sim-embed", cache=tmp_path / "llm", ledger=ledger,
                          batch_size=3) as emb:
        first = emb.embed(texts)
    assert first.shape == (7, 64) and first.dtype == np.float64
    assert _endpoint_calls(sim) - before == 3  # 7 texts in batches of 3
    snap = ledger.snapshot()
    assert (snap.calls, snap.succeeded, snap.cache_hits) == (3, 3, 0) and snap.prompt_tokens > 0
    assert snap.completion_tokens == 0 and snap.cost_usd > 0
    cache = CallCache(tmp_path / "llm")
    assert len(cache) == 3
    body = {"model": "sim-embed", "input": texts[:3], "encoding_format": "float"}
    assert embeddings_key(body) in cache and embeddings_key(body) != request_key(body)
    # a re-run (a new client, same cache) sends nothing and returns the same floats
    again_ledger = Ledger()
    with OpenAIEmbeddings(sim.base_url, model="sim-embed", cache=tmp_path / "llm", ledger=again_ledger,
                          batch_size=3) as emb:
        again = emb.embed(texts)
    assert _endpoint_calls(sim) - before == 3
    assert np.array_equal(first, again)
    assert (again_ledger.snapshot().calls, again_ledger.snapshot().cache_hits) == (0, 3)
    # the long text was cut to max_chars: its vector is that of its first 8,000 characters
    with OpenAIEmbeddings(sim.base_url, model="sim-embed", batch_size=3) as emb:
        assert np.array_equal(emb.embed(["x" * 8000])[0], first[6])


def test_the_key_comes_from_the_named_variable_and_is_written_nowhere(sim, tmp_path, monkeypatch):
    secret = "sk-" + "test-embeddings-secret-4242"  # split: no key-shaped string is tracked
    monkeypatch.setenv("SELFIMPROVE_TEST_EMBED_KEY", secret)
    with OpenAIEmbeddings(sim.base_url, "SELFIMPROVE_TEST_EMBED_KEY", model="sim-embed", cache=tmp_path) as emb:
        emb.embed(["where is my parcel"])
        assert secret not in repr(emb) and "$SELFIMPROVE_TEST_EMBED_KEY" in repr(emb)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and all(secret not in p.read_text() for p in files)


def test_adapter_errors_are_embeddings_failed_and_every_attempt_is_booked(tmp_path):
    with start_server("support", seed=0, error_rate=1.0) as sim:
        ledger = Ledger()
        emb = OpenAIEmbeddings(sim.base_url, model="sim-embed", cache=tmp_path, ledger=ledger, max_retries=1)
        with pytest.raises(EmbeddingsFailed, match="HTTP 500") as info:
            emb.embed(["hello"])
        assert isinstance(info.value, SelfimproveError) and "sim-embed" in info.value.message
        assert ledger.snapshot().calls == ledger.snapshot().failed == 2  # the SDK retried once
        assert sim.stats()["by_status"] == {"500": 2} and len(CallCache(tmp_path)) == 0  # errors never cached
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EmbeddingsFailed, match="APIConnectionError"):
        OpenAIEmbeddings(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0).embed(["hello"])


def test_adapter_respects_a_budget_and_never_needs_a_key_on_loopback(sim, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ledger = Ledger(budget=Budget(max_calls=1))
    emb = OpenAIEmbeddings(sim.base_url, model="sim-embed", ledger=ledger, batch_size=1)
    with pytest.raises(BudgetExceeded):
        emb.embed(["one", "two"])
    assert ledger.snapshot().calls == 1 and ledger.snapshot().refused == 1
    monkeypatch.delenv("SELFIMPROVE_TEST_EMBED_KEY", raising=False)
    with pytest.raises(SelfimproveError, match="SELFIMPROVE_TEST_EMBED_KEY is not set"):
        OpenAIEmbeddings("https://embeddings.example.com/v1", "SELFIMPROVE_TEST_EMBED_KEY", model="m")


class _RefusingHandler(BaseHTTPRequestHandler):
    """Answers every POST as OpenAI answers a bad key: 401, quoting the bearer key in the message; under
    /bad-request/ the same message with a 400 (an error whose text quotes the key but is not an auth error)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        status = 401 if "/bad-request/" not in self.path else 400
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_error_messages_never_carry_the_key(monkeypatch):
    secret = "sk-" + "test-embeddings-secret-4242"  # split: no key-shaped string is tracked
    monkeypatch.setenv("SELFIMPROVE_TEST_EMBED_KEY", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for base, status in ((f"{url}/v1", "HTTP 401"), (f"{url}/bad-request/v1", "HTTP 400")):
            emb = OpenAIEmbeddings(base, "SELFIMPROVE_TEST_EMBED_KEY", model="m", max_retries=0)
            with pytest.raises(EmbeddingsFailed) as info:
                emb.embed(["hello"])
            text = f"{info.value.message} {info.value.hint}"
            assert "***" in text or status == "HTTP 401"  # the 400 quoted the key: masked, not dropped
            assert status in text and secret not in text and "secret-4242" not in text
    finally:
        server.shutdown()
        server.server_close()
