"""Every fault knob, observed through the real openai SDK."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from selfimprove.sim import start_server

MSG = [{"role": "user", "content": "Where is my kettle? My order number is #12345."}]


@pytest.fixture()
def sim():
    with start_server("support") as s:
        yield s


def _client(sim, **kw):
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=sim.base_url, api_key="sim", **kw)


def test_throttle_rate_answers_429_with_retry_after_and_the_sdk_honours_it(sim):
    sim.configure(throttle_rate=1.0, retry_after_s=0.05)
    with pytest.raises(openai.RateLimitError) as err:
        _client(sim).chat.completions.create(model="sim-small", messages=MSG)
    headers = err.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "50"
    sim.configure(throttle_rate=0.5, seed=1)
    sim.reset_stats()
    t0 = time.perf_counter()
    for _ in range(10):  # with retries, every call succeeds eventually
        _client(sim, max_retries=8).chat.completions.create(model="sim-small", messages=MSG)
    st = sim.stats()
    assert st["by_status"]["200"] == 10 and st["by_status"].get("429", 0) >= 2
    assert time.perf_counter() - t0 >= 0.05 * st["by_status"]["429"] * 0.9


def test_request_rate_limit_throttles_bursts(sim):
    # A token bucket of `rate` tokens refilled at `rate`/s: whatever the machine's speed, at most
    # burst + rate x elapsed calls pass; a low rate keeps 429s certain even when each call is slow (busy CI).
    rate = 2.0
    sim.configure(rate_limit=rate)
    c = _client(sim)
    outcomes = []
    t0 = time.perf_counter()
    for _ in range(40):
        try:
            c.chat.completions.create(model="sim-small", messages=MSG)
            outcomes.append(200)
        except openai.RateLimitError as e:
            assert float(e.response.headers["retry-after-ms"]) > 0
            outcomes.append(429)
    elapsed = time.perf_counter() - t0
    assert outcomes[:2] == [200, 200] and outcomes.count(429) >= 5
    assert outcomes.count(200) <= rate + rate * elapsed + 1
    st = sim.stats()
    assert st["by_status"]["429"] == outcomes.count(429)


def test_server_errors_can_be_switched_on_mid_run(sim):
    c = _client(sim)
    c.chat.completions.create(model="sim-small", messages=MSG)
    sim.configure(error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="sim-small", messages=MSG)
    sim.configure(error_rate=0.0)
    c.chat.completions.create(model="sim-small", messages=MSG)
    assert sim.stats()["by_status"] == {"200": 2, "500": 1}


def test_dropped_connection_is_a_connection_error(sim):
    sim.configure(drop_rate=1.0)
    with pytest.raises(openai.APIConnectionError):
        _client(sim).chat.completions.create(model="sim-small", messages=MSG)
    assert sim.stats()["by_status"] == {"dropped": 1}


def test_slow_response_exceeds_client_timeout_and_latency_is_added(sim):
    sim.configure(slow_rate=1.0, slow_ms=1500)
    with pytest.raises(openai.APITimeoutError):
        _client(sim, timeout=httpx2.Timeout(0.3)).chat.completions.create(model="sim-small", messages=MSG)
    sim.configure(slow_rate=0.0, latency_ms=120, jitter_ms=20)
    t0 = time.perf_counter()
    _client(sim).chat.completions.create(model="sim-small", messages=MSG)
    assert 0.1 <= time.perf_counter() - t0 < 1.0


def test_faults_can_target_some_models_only(sim):
    sim.configure(error_rate=1.0, fault_models=["sim-small"])
    c = _client(sim)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="sim-small", messages=MSG)
    c.chat.completions.create(model="sim-judge", messages=MSG)


def test_unknown_knob_is_rejected():
    with pytest.raises(ValueError, match="unknown simulator knob"):
        start_server("support", error_rat=0.1)
