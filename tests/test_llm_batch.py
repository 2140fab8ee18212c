"""The Batch API path: the simulator's files/batches endpoints through the real `openai` SDK, and `BatchClient` under
the call cache (same answers as online, half the price, partial failures retried, resumed after kill -9)."""

from __future__ import annotations

import io
import json
import sys
import time

import openai
import pytest
from sim_helpers import kill_once_submitted

from selfimprove.llm import CallCache, Ledger, OpenAIChat, run_many
from selfimprove.llm.batch import BatchClient
from selfimprove.llm.batch_journal import BatchJournal
from selfimprove.sim import start_server

PRICES = {"sim-small": {"input": 0.15, "output": 0.6}}


def _requests(n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Answer the customer briefly."},
                          {"role": "user", "content": f"order {i} has not arrived, what now?"}], "temperature": 0}
            for i in range(n)]


def _line(i: int, model: str = "sim-small") -> str:
    return json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]}})


def _wait(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    deadline = time.monotonic() + 20
    while (b := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, b.status
        time.sleep(0.05)
    return b


@pytest.fixture
def sim():
    with start_server("support", seed=3, batch_delay_s=0.2) as server:
        yield server


def test_sim_batch_endpoints_through_the_sdk(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="unused")
    upload = client.files.create(file=("in.jsonl", io.BytesIO("\n".join(_line(i) for i in range(20)).encode())),
                                 purpose="batch")
    assert (upload.object, upload.purpose, upload.bytes) == ("file", "batch", len(client.files.content(upload.id).content))
    sim.configure(batch_error_rate=0.25)
    created = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"who": "test"})
    assert created.status == "validating" and created.metadata == {"who": "test"}
    done = _wait(client, created.id)
    counts = done.request_counts
    assert done.status == "completed" and counts.total == 20 and 0 < counts.failed < 20
    assert counts.completed + counts.failed == 20 and done.usage.input_tokens > 0
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    err = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert len(out) == counts.completed and {e["response"]["status_code"] for e in err} == {500}
    # a successful line is exactly the online endpoint's answer to the same body
    first = out[0]
    i = int(first["custom_id"][1:])
    online = client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": f"hello {i}"}])
    assert first["response"]["body"] == online.model_dump(exclude_unset=True)
    # a bad file fails the whole batch, naming the line; a second model too
    bad = client.files.create(file=("bad.jsonl", io.BytesIO((_line(0) + "\n{oops\n").encode())), purpose="batch")
    failed = _wait(client, client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions",
                                                 completion_window="24h").id)
    assert failed.status == "failed" and [(e.code, e.line) for e in failed.errors.data] == [("invalid_json_line", 2)]
    mixed = client.files.create(file=("m.jsonl", io.BytesIO((_line(0) + "\n" + _line(1, "sim-large")).encode())),
                                purpose="batch")
    mixed_id = client.batches.create(input_file_id=mixed.id, endpoint="/v1/chat/completions",
                                     completion_window="24h").id
    assert _wait(client, mixed_id).errors.data[0].code == "mismatched_model"
    # cancel; list is newest first and pages
    sim.configure(batch_delay_s=60)
    slow = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(slow.id).status == "cancelling"
    assert _wait(client, slow.id).status == "cancelled"
    first_page = client.batches.list(limit=2)
    assert [b.id for b in first_page.data] == [slow.id, mixed_id] and first_page.has_more
    assert [b.id for b in first_page] == [slow.id, mixed_id, failed.id, created.id]  # the SDK follows the pages
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")


def _online_then_batched(sim, tmp_path, reqs: list[dict], max_retries: int, **knobs):
    """`reqs` online, then through a BatchClient with the simulator's `knobs` set: (online results, batched
    results, the batch run's ledger, its progress events)."""
    online = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=tmp_path / "online", ledger=Ledger(PRICES),
                                 concurrency=8), reqs)
    sim.configure(**knobs)
    ledger, cache, events = Ledger(PRICES), CallCache(tmp_path / "batch"), []
    client = BatchClient(sim.base_url, "unused", tmp_path / "batches", cache=cache, poll_s=0.05, gather_s=0.05,
                         max_retries=max_retries, on_event=events.append)
    batched = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=ledger, concurrency=1000,
                                  batch=client), reqs)
    return online, batched, ledger, events


def test_batch_client_matches_online_at_half_price_and_retries_failed_lines(sim, tmp_path):
    reqs = _requests(40)
    online, batched, ledger, events = _online_then_batched(sim, tmp_path, reqs, max_retries=3, batch_error_rate=0.2)
    cache = CallCache(tmp_path / "batch")
    ok = [i for i, r in enumerate(batched) if r.ok]
    assert len(ok) >= 38  # a line that failed all 4 times is a failed call (data), not a crash
    assert all("HTTP 500" in r.error for r in batched if not r.ok)
    assert [(batched[i].text, batched[i].key, batched[i].usage, batched[i].cost) for i in ok] == \
        [(online[i].text, online[i].key, online[i].usage, online[i].cost) for i in ok]
    assert all(batched[i].latency_ms is None for i in ok)
    snap = ledger.snapshot()
    assert snap.batched == snap.calls == 40 and snap.succeeded == len(ok)
    assert snap.cost_usd == pytest.approx(sum(online[i].cost for i in ok) / 2)
    stats = sim.stats()["by_endpoint"]
    assert stats["POST /v1/batches"] >= 2  # the failed lines went out again, together
    assert stats.get("/v1/chat/completions", 0) == 40  # only the online run's
    records = list(BatchJournal(tmp_path / "batches").records())
    assert all(r.state == "collected" for r in records) and sum(r.completed for r in records) == len(ok)
    # closed: the uploaded JSONL is gone, each record keeps its batch id and counts, not its request keys
    assert not list((tmp_path / "batches").glob("*.jsonl"))
    assert all(r.batch_id and r.requests == () and r.n_requests == r.completed + r.failed for r in records)
    assert max(r.n_requests for r in records) == 40  # the first batch; the follow-ups hold its failed lines
    assert any("submitted batch" in e for e in events)
    # the cache now answers an online client for free, byte-identical
    again = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(PRICES)), reqs)
    assert [r.text for r in again] == [r.text for r in online] and sum(r.cached for r in again) == len(ok)


CHILD = """
import sys
from selfimprove.llm import Ledger, OpenAIChat, CallCache, run_many
from selfimprove.llm.batch import BatchClient
base, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reqs = [{"messages": [{"role": "system", "content": "Answer the customer briefly."},
                      {"role": "user", "content": f"order {i} has not arrived, what now?"}], "temperature": 0}
        for i in range(n)]
cache = CallCache(folder + "/cache")
client = BatchClient(base, "unused", folder + "/batches", cache=cache, poll_s=0.05, gather_s=0.05)
run_many(OpenAIChat(base, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000, batch=client), reqs)
print("finished")
"""


def test_kill_9_between_submit_and_collect_never_resubmits(sim, tmp_path):
    sim.configure(batch_delay_s=3600)
    kill_once_submitted([sys.executable, "-c", CHILD, sim.base_url, str(tmp_path), "30"], tmp_path / "batches")
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 1
    sim.configure(batch_delay_s=0)
    ledger, cache = Ledger(PRICES), CallCache(tmp_path / "cache")
    client = BatchClient(sim.base_url, "unused", tmp_path / "batches", cache=cache, poll_s=0.05, gather_s=0.05)
    resumed = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=ledger, concurrency=1000,
                                  batch=client), _requests(30))
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 1  # picked up, not sent again
    assert sim.stats()["by_endpoint"]["POST /v1/files"] == 1
    online = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=tmp_path / "online", ledger=Ledger()),
                      _requests(30))
    assert [r.text for r in resumed] == [r.text for r in online]
    assert ledger.snapshot().batched == 30


def test_a_crash_right_after_batches_create_is_found_by_its_metadata(sim, tmp_path):
    """The record says `uploaded` (batches.create returned, the process died before writing its id): the restart
    finds the batch by its metadata instead of creating a second one."""
    cache = CallCache(tmp_path / "cache")
    journal = BatchJournal(tmp_path / "batches")
    kept = {}  # the journal as it stood once the batch was submitted (it is closed once collected)
    keep = lambda event: kept.update({p.name: p.read_bytes() for p in journal.root.iterdir()}) \
        if event.startswith("submitted") else None
    run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000,
                        batch=BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05, gather_s=0.05,
                                          on_event=keep)),
             _requests(5))
    for name, data in kept.items():
        (journal.root / name).write_bytes(data)
    (record,) = journal.records()
    assert record.state == "submitted" and len(record.requests) == 5
    journal.save(record.model_copy(update={"state": "uploaded", "batch_id": None}))
    for path in (tmp_path / "cache").rglob("*.json"):
        path.unlink()  # as if the results had never come back
    again = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000,
                                batch=BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05,
                                                  gather_s=0.05)), _requests(5))
    assert all(r.ok for r in again)
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 1
    (record,) = journal.records()
    assert record.state == "collected" and record.batch_id


def test_equal_requests_waiting_at_once_are_sent_once_and_booked_once(sim, tmp_path):
    cache = CallCache(tmp_path / "cache")
    ledger = Ledger(PRICES)
    client = BatchClient(sim.base_url, "unused", tmp_path / "batches", cache=cache, poll_s=0.05, gather_s=0.05)
    out = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=ledger, concurrency=1000,
                              batch=client), _requests(3) + _requests(3))
    assert [r.text for r in out[:3]] == [r.text for r in out[3:]] and all(r.ok for r in out)
    assert sim.stats()["by_endpoint"]["batch:/v1/chat/completions"] == 3
    snap = ledger.snapshot()
    assert (snap.calls, snap.batched, snap.cache_hits) == (3, 3, 3)


def test_an_endpoint_without_a_batch_api_stops_with_a_clear_error(sim, tmp_path):
    from selfimprove.llm.types import LLMUnavailable

    cache = CallCache(tmp_path / "cache")
    nowhere = sim.url + "/no-batches/v1"  # 404 for /files
    client = BatchClient(nowhere, "unused", tmp_path / "batches", cache=cache, poll_s=0.05, gather_s=0.05)
    with pytest.raises(LLMUnavailable, match=r"Batch API at .*/no-batches/v1 failed: \w+Error \(HTTP 4\d\d\)") as err:
        run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=100,
                            batch=client), _requests(3))
    assert "journal" in err.value.hint
    (record,) = BatchJournal(tmp_path / "batches").records()
    assert record.state == "prepared"  # nothing left the machine; a re-run drops it


def test_an_expired_batch_keeps_what_ran_and_resends_the_rest_once_then_reports_them(sim, tmp_path):
    """The completion window closed first: the answered lines are used, the unrun ones go out again in a follow-up
    batch (max_retries=1), and those that expire again are failed calls that say batch_expired."""
    online, batched, ledger, events = _online_then_batched(sim, tmp_path, _requests(40), max_retries=1,
                                                           batch_expire_rate=0.5)
    ok = [i for i, r in enumerate(batched) if r.ok]
    lost = [r for r in batched if not r.ok]
    records = sorted(BatchJournal(tmp_path / "batches").records(), key=lambda r: r.batch_id)
    assert [(r.status, r.n_requests) for r in records] == [("expired", 40), ("expired", 40 - records[0].completed)]
    assert 0 < records[0].completed < 40 and 0 < records[1].completed < records[1].n_requests
    assert len(ok) == records[0].completed + records[1].completed and len(lost) == records[1].failed
    assert all("batch_expired" in r.error for r in lost)  # reported by reason, not dropped
    assert [batched[i].text for i in ok] == [online[i].text for i in ok]
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 2
    assert any("expired before every request ran" in e and "go out again" in e for e in events)
    assert ledger.snapshot().succeeded == len(ok)


def test_a_cancelled_batch_stops_with_a_clear_error_and_a_rerun_sends_it_again(sim, tmp_path):
    import threading

    from selfimprove.llm.types import LLMUnavailable

    sim.configure(batch_delay_s=3600)
    cache, journal = CallCache(tmp_path / "cache"), BatchJournal(tmp_path / "batches")
    outcome = {}

    def run() -> None:
        client = BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05, gather_s=0.05)
        try:
            run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000,
                                batch=client), _requests(6))
        except LLMUnavailable as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not any(r.state == "submitted" for r in journal.records()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (record,) = journal.records()
    openai.OpenAI(base_url=sim.base_url, api_key="unused").batches.cancel(record.batch_id)
    worker.join(30)
    error = outcome["error"]
    assert "was cancelled (not by selfimprove): 0 of its 6 requests had run" in error.message
    assert "re-run" in error.hint
    (record,) = journal.records()
    assert (record.state, record.status, record.requests) == ("cancelled", "cancelled", ())
    sim.configure(batch_delay_s=0)
    client = BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05, gather_s=0.05)
    again = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000,
                                batch=client), _requests(6))
    assert all(r.ok for r in again) and sim.stats()["by_endpoint"]["POST /v1/batches"] == 2


def test_a_batch_the_provider_refuses_stops_with_its_reason_and_is_not_waited_for_again(sim, tmp_path):
    from selfimprove.llm.types import LLMUnavailable

    sim.configure(batch_fail="token_limit_exceeded")
    cache, journal = CallCache(tmp_path / "cache"), BatchJournal(tmp_path / "batches")

    def run() -> list:
        client = BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05, gather_s=0.05)
        return run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=1000,
                                   batch=client), _requests(4))

    with pytest.raises(LLMUnavailable, match="refused batch .* nothing in it ran .*token_limit_exceeded") as err:
        run()
    assert "without --batch" in err.value.hint
    (record,) = journal.records()
    assert record.state == "failed" and not list(journal.root.glob("*.jsonl"))
    sim.configure(batch_fail="")
    assert all(r.ok for r in run())  # the failed batch is closed: the re-run sends a new one
    assert sim.stats()["by_endpoint"]["POST /v1/batches"] == 2


def test_a_dollar_budget_reserves_a_batch_call_at_the_batch_price(sim, tmp_path):
    """A budget between the batch and the online price of one request's worst case: refused online before anything
    is sent, answered through a batch, and what the batch call cost is within the budget."""
    from selfimprove.llm.accounting import Budget, BudgetExceeded, PriceTable, worst_case_tokens

    request = {**_requests(1)[0], "max_tokens": 300}
    prompt, completion = worst_case_tokens({"model": "sim-small", **request}, 4096)
    budget = Budget(max_usd=PriceTable(PRICES).cost("sim-small", prompt, completion) * 0.75)
    with pytest.raises(BudgetExceeded, match="could be exceeded"):
        run_many(OpenAIChat(sim.base_url, model="sim-small", cache=tmp_path / "online", ledger=Ledger(PRICES, budget)),
                 [request])
    assert sim.stats()["by_endpoint"].get("/v1/chat/completions", 0) == 0
    ledger, cache = Ledger(PRICES, budget), CallCache(tmp_path / "batch")
    client = BatchClient(sim.base_url, "unused", tmp_path / "batches", cache=cache, poll_s=0.05, gather_s=0.05)
    (out,) = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=ledger, concurrency=10,
                                 batch=client), [request])
    snap = ledger.snapshot()
    assert out.ok and snap.batched == 1 and 0 < snap.cost_usd <= budget.max_usd


def test_a_follow_up_batch_of_the_same_requests_has_its_own_record(sim, tmp_path):
    """Every line of the first batch fails, so the follow-up holds exactly the same requests: two records, two
    provider batches, each closed with its counts, and the calls fail with the batch's reason."""
    sim.configure(batch_error_rate=1.0)
    cache, journal = CallCache(tmp_path / "cache"), BatchJournal(tmp_path / "batches")
    client = BatchClient(sim.base_url, "unused", journal, cache=cache, poll_s=0.05, gather_s=0.05, max_retries=1)
    out = run_many(OpenAIChat(sim.base_url, model="sim-small", cache=cache, ledger=Ledger(), concurrency=100,
                              batch=client), _requests(3))
    assert not any(r.ok for r in out) and all("HTTP 500" in r.error for r in out)
    records = list(journal.records())
    assert len(records) == 2 and len({r.batch_id for r in records}) == 2
    assert all((r.state, r.n_requests, r.failed) == ("collected", 3, 3) for r in records)
