"""Simulator throughput: chat-completion requests per second at zero latency with concurrent clients.

The server runs as a subprocess (its own core); clients are threads with keep-alive connections, first raw
http.client (the server's own ceiling), then the real openai SDK (what other benchmarks see). Target: >= 500/s for
the simulator itself, i.e. the raw http.client figure; the SDK figure is the client's ceiling (the SDK's own CPU per
call in the client threads), printed for reference, not judged.

    .venv/bin/python benchmarks/bench_sim.py [--seconds 3] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import urlparse

from selfimprove.sim import default_policy, generate_inputs, start_server

TARGET = 500.0


def _bodies(n: int) -> list[bytes]:
    pol = default_policy("support")
    return [json.dumps({"model": pol["model"], "temperature": pol["temperature"],
                        "messages": [{"role": "system", "content": pol["system_prompt"]}, *m]}).encode()
            for m in generate_inputs("support", n, seed=1)]


def _run_threads(worker, clients: int) -> float:
    """Run `worker(i)` on `clients` threads; the wall time until all have finished."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_raw(base_url: str, clients: int, seconds: float) -> tuple[int, float]:
    u = urlparse(base_url)
    bodies = _bodies(256)
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port)
        k = i
        while time.perf_counter() < stop:
            conn.request("POST", "/v1/chat/completions", body=bodies[k % len(bodies)],
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            counts[i] += 1
            k += clients
        conn.close()

    elapsed = _run_threads(worker, clients)  # before counting: the workers fill `counts`
    return sum(counts), elapsed


def run_sdk(base_url: str, clients: int, seconds: float) -> tuple[int, float]:
    import openai

    inputs = generate_inputs("support", 256, seed=2)
    pol = default_policy("support")
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)
        k = i
        while time.perf_counter() < stop:
            client.chat.completions.create(model=pol["model"], temperature=pol["temperature"],
                                           messages=[{"role": "system", "content": pol["system_prompt"]},
                                                     *inputs[k % len(inputs)]])
            counts[i] += 1
            k += clients

    elapsed = _run_threads(worker, clients)  # before counting: the workers fill `counts`
    return sum(counts), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with start_server("support", mode="subprocess") as sim:
        run_raw(sim.base_url, 2, 0.3)  # warm up
        sim.reset_stats()
        n, dt = run_raw(sim.base_url, args.clients, args.seconds)
        raw = n / dt
        stats = sim.stats()
        assert stats["by_status"] == {"200": n}, stats["by_status"]
        n2, dt2 = run_sdk(sim.base_url, args.clients, args.seconds)
        sdk = n2 / dt2
    print(f"sim raw http.client: {raw:,.0f} req/s ({n} requests, {args.clients} clients, {dt:.1f} s)  <- the target")
    print(f"sim openai SDK:      {sdk:,.0f} req/s ({n2} requests, {args.clients} clients, {dt2:.1f} s)  "
          "(client-bound, for reference)")
    print(f"target >= {TARGET:.0f} req/s for the simulator itself (raw http.client): "
          f"{'OK' if raw >= TARGET else 'MISSED'}")
    if raw < TARGET:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
