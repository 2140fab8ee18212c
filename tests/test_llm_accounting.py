"""Ledger, budget, prices and the call cache on their own (no network)."""

from __future__ import annotations

import json
import threading

import pytest

from selfimprove.config.models import Price
from selfimprove.core.canonical import canonical_json
from selfimprove.core.errors import SelfimproveError
from selfimprove.llm import Budget, BudgetExceeded, CallCache, Ledger, PriceTable, request_key
from selfimprove.llm.accounting import worst_case_tokens

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
USAGE = {"prompt_tokens": 7, "completion_tokens": 5}


def test_prices_cost_and_estimate():
    prices = PriceTable({"m": {"input": 2.0, "output": 8.0}, "c": Price(input=1.0, output=1.0)})
    assert prices.cost("m", 1_000_000, 500_000) == pytest.approx(6.0)
    assert prices.cost("c", 10, 10) == pytest.approx(20e-6)
    assert prices.cost("unknown", 10**6, 10**6) == 0.0 and not prices.knows("unknown")
    assert prices.estimate(1000, 500, 100, "m") == pytest.approx(1000 * (500 * 2 + 100 * 8) / 1e6)
    assert Ledger(prices).estimate(10, 100, 10, "m") == pytest.approx(prices.estimate(10, 100, 10, "m"))


def test_worst_case_bounds_the_request():
    prompt, completion = worst_case_tokens(BODY, 4096)
    assert prompt == len(canonical_json(BODY["messages"])) and completion == 20
    assert worst_case_tokens({**BODY, "max_tokens": None, "n": 3}, 100)[1] == 300
    assert worst_case_tokens({**BODY, "max_completion_tokens": 7}, 100)[1] == 7


def test_call_budget_counts_calls_in_flight():
    ledger = Ledger(budget=Budget(max_calls=3))
    held = [ledger.reserve("m", BODY) for _ in range(3)]
    assert ledger.try_reserve("m", BODY) is None  # three in flight: a fourth must wait for them to settle
    for r in held:
        ledger.settle(r, ok=True, usage=USAGE, latency_ms=1.0)
    with pytest.raises(BudgetExceeded) as err:
        ledger.try_reserve("m", BODY)  # three sent: no waiting helps now
    assert isinstance(err.value, SelfimproveError) and err.value.hint
    snap = ledger.snapshot()
    assert (snap.calls, snap.succeeded, snap.refused, snap.tokens) == (3, 3, 1, 36)


def test_a_waiting_reservation_proceeds_when_a_call_settles():
    ledger = Ledger(budget=Budget(max_calls=2))
    first = ledger.reserve("m", BODY)
    second_failed = ledger.reserve("m", BODY)
    got = []

    def wait_for_budget():
        try:
            got.append(ledger.reserve("m", BODY))
        except BudgetExceeded as e:
            got.append(e)

    waiter = threading.Thread(target=wait_for_budget)
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive() and not got  # both calls in flight: the third waits
    ledger.settle(second_failed, ok=False, usage=None, latency_ms=0)
    waiter.join(0.1)
    assert waiter.is_alive()  # a failed call still counts as a call sent: two sent, waiting for `first`
    ledger.settle(first, ok=True, usage=USAGE, latency_ms=0)
    waiter.join(2)
    assert not waiter.is_alive() and isinstance(got[0], BudgetExceeded)  # now it knows: refused


def test_dollar_budget_reserves_the_worst_case_and_needs_a_price():
    prices = {"m": {"input": 1_000_000.0, "output": 1_000_000.0}}  # $1 per token: easy arithmetic
    prompt, completion = worst_case_tokens(BODY, 4096)
    ledger = Ledger(prices, Budget(max_usd=prompt + completion + 12.0))
    r = ledger.reserve("m", BODY)
    assert ledger.try_reserve("m", BODY) is None  # the first call's worst case is still reserved
    ledger.settle(r, ok=True, usage=USAGE, latency_ms=1.0)  # it actually cost $12
    r2 = ledger.reserve("m", BODY)  # now $(prompt+completion) remain: exactly one worst case
    ledger.settle(r2, ok=False, usage=None, latency_ms=1.0)
    assert ledger.snapshot().cost_usd == pytest.approx(12.0)
    with pytest.raises(BudgetExceeded, match="no price"):
        Ledger(prices, Budget(max_usd=100.0)).reserve("unpriced", BODY)


def test_token_budget():
    ledger = Ledger(budget=Budget(max_tokens=sum(worst_case_tokens(BODY, 0)) * 2))
    for _ in range(2):
        ledger.settle(ledger.reserve("m", BODY), ok=True, usage=USAGE, latency_ms=0)
    # 24 used; a third worst case (prompt bound + 20) no longer fits when 2 worst cases was the limit
    with pytest.raises(BudgetExceeded):
        ledger.reserve("m", {**BODY, "max_tokens": 10**6})


def test_ledger_is_thread_safe():
    ledger = Ledger({"m": {"input": 1.0, "output": 1.0}})

    def work():
        for _ in range(500):
            ledger.settle(ledger.reserve("m", BODY), ok=True, usage=USAGE, latency_ms=1.0)
            ledger.record_hit("m")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert (snap.calls, snap.cache_hits, snap.prompt_tokens, snap.completion_tokens) == (4000, 4000, 28000, 20000)
    assert snap.cost_usd == pytest.approx(48000 / 1e6)


def test_request_key_is_canonical_and_pinned():
    reordered = {"max_tokens": 20, "messages": [{"content": "hello", "role": "user"}], "model": "m"}
    assert request_key(BODY) == request_key(reordered)
    assert request_key(BODY, 1) != request_key(BODY, 0)
    assert request_key({**BODY, "temperature": 0.5}) != request_key(BODY)
    # golden: changing the key's form invalidates every cache; do it on purpose only
    assert request_key(BODY) == "sha256:" + __import__("hashlib").sha256(canonical_json(
        {"endpoint": "chat/completions", "request": BODY, "sample_index": 0})).hexdigest()


def test_cache_round_trip_sharded_and_atomic(tmp_path):
    cache = CallCache(tmp_path / "cache" / "llm")
    key = request_key(BODY)
    assert cache.get(key) is None and key not in cache
    response = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": USAGE}
    cache.put(key, BODY, 0, response, 12.3456)
    path = cache.path(key)
    assert path.parent.name == key.removeprefix("sha256:")[:2] and path.name.endswith(".json")
    entry = cache.get(key)
    assert entry["response"] == response and entry["request"] == BODY and entry["latency_ms"] == 12.346
    assert key in cache and len(cache) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind
    path.write_text(json.dumps({**entry, "key": "sha256:other"}))
    assert cache.get(key) is None  # an entry must name its own key


def test_models_called_without_a_price_are_named_in_one_warning():
    from selfimprove.llm.accounting import price_warning

    ledger = Ledger(prices={"priced": {"input": 1.0, "output": 2.0}})
    for model in ("priced", "sim-small", "sim-judge"):
        ledger.settle(ledger.reserve(model, {"messages": []}), ok=True, usage=None, latency_ms=1.0)
    ledger.record_hit("cached-only")
    assert ledger.unpriced() == ["cached-only", "sim-judge", "sim-small"]
    text = price_warning(ledger.unpriced())
    assert "cached-only, sim-judge, sim-small" in text and '[llm.prices."cached-only"]' in text
    assert price_warning(Ledger(prices={"priced": {"input": 1, "output": 1}}).unpriced()) is None
