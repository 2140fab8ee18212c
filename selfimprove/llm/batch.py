"""Chat completions through a provider's Batch API (OpenAI's `/v1/files` + `/v1/batches`, via the `openai` SDK).

`BatchTransport` stands where the HTTP transport stands under the call cache (`httpx_cache`): the cache answers
what it holds, the ledger reserves the budget, and only the misses reach the batch. Each miss waits in a queue;
once no new request has arrived for `gather_s`, the queue goes out as one batch per model (JSONL written to the
run folder, `files.create`, `batches.create`), which is polled every `poll_s` until it ends; its output and
error files are read, every successful response is written to the call cache, and each waiting request gets
its own response back, exactly as the online endpoint would have answered it. So the callers (our task model,
phoenix-evals' judges) are unchanged, and a batch's results are byte-identical to the online path's.

- Partial failures: the requests the error file answers with a retryable status (408, 409, 429, 5xx), or that
  an expired batch left unrun, go out again in a follow-up batch, up to `max_retries` times; then the last answer
  is returned (one failed call is data, its error says why). A batch the provider fails as a whole (its input was
  refused) or that was cancelled outside selfimprove raises `LLMUnavailable` (batch_outcome says what each end
  status means).
- Closing: once a batch's answers are in the call cache, its journal record is closed (batch_journal.close): the
  uploaded JSONL is deleted and the record keeps only the batch id, status and counts.
- Resuming: every batch is recorded in the journal (batch_journal) before and after each step. A new event loop
  (a restarted process) first reads the journal: a request whose batch was submitted waits for that batch and is
  never sent again; a batch whose creation was interrupted is found by its metadata (`batches.list`).
- Accounting: responses carry `x-selfimprove-batch: <batch id>`; the ledger books them at the batch price, and
  they have no latency (None: a batch call has no per-request latency to report). Equal requests (one cache key)
  waiting at once are sent once; the others are answered like cache hits (`x-selfimprove-batch-shared`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import canonical_json
from selfimprove.llm.batch_journal import BatchJournal, BatchRecord, BatchRequest, batch_name
from selfimprove.llm.batch_outcome import (
    DONE,
    Answer,
    answer,
    cancelled,
    read_lines,
    refused,
    retryable,
    unavailable,
)
from selfimprove.llm.cache import CallCache
from selfimprove.llm.types import LLMUnavailable

BATCH_HEADER = "x-selfimprove-batch"
SHARED_HEADER = "x-selfimprove-batch-shared"  # the answer of an equal request waiting in the same batch
CALL_EXTENSION = "selfimprove_call"  # (key, sample_index), set on the request by the caching transport
ENDPOINT = "/v1/chat/completions"
Waited = tuple[Answer, bool]  # (answer, shared: an equal request already waited for it)


@dataclass
class _Live:
    """A submitted batch this event loop waits for: its record and a future per request key."""

    record: BatchRecord
    futures: dict[str, asyncio.Future] = field(default_factory=dict)
    task: asyncio.Task | None = None


@dataclass
class _LoopState:
    live: dict[str, _Live] = field(default_factory=dict)  # request key -> its pending batch
    queue: dict[str, dict[str, tuple[dict[str, Any], int, asyncio.Future]]] = field(default_factory=dict)
    flusher: asyncio.Task | None = None
    recovered: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    tasks: set[asyncio.Task] = field(default_factory=set)


class BatchClient:
    """Sends chat-completions requests as batches to one base_url; one per endpoint and run folder."""

    def __init__(self, base_url: str, api_key: str, journal: BatchJournal | str | Path, *,
                 cache: CallCache | None = None, poll_s: float = 30.0, gather_s: float = 0.5,
                 max_requests: int = 50_000, max_retries: int = 2, timeout_s: float = 120.0,
                 on_event: Callable[[str], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.journal = journal if isinstance(journal, BatchJournal) else BatchJournal(journal)
        self.cache, self.poll_s, self.gather_s = cache, poll_s, gather_s
        self.max_requests, self.max_retries, self.timeout_s = max_requests, max_retries, timeout_s
        self.on_event = on_event
        self._api_key = api_key
        self._loop: Any = None
        self._state = _LoopState()
        self._sdk: Any = None

    def __repr__(self) -> str:  # never shows the key
        return f"BatchClient({self.base_url!r}, journal={str(self.journal.root)!r})"

    def _here(self) -> tuple[_LoopState, Any]:
        """This event loop's state and SDK client (futures and connection pools belong to one loop)."""
        import openai

        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._state, self._sdk = loop, _LoopState(), None
        if self._sdk is None:  # closed whenever this loop has nothing left in flight (its pool dies with the loop)
            self._sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s)
        return self._state, self._sdk

    def _say(self, text: str) -> None:
        if self.on_event is not None:
            self.on_event(text)

    async def complete(self, key: str, body: dict[str, Any], sample_index: int = 0) -> Waited:
        """The answer to one request, through as many batches as its retries take, and whether an equal request
        (same cache key) was already waiting for it: then it is sent once, and this one is like a cache hit."""
        for attempt in range(self.max_retries + 1):
            (status, payload, batch_id), shared = await self._once(key, body, sample_index)
            if status == 200 or not retryable(status) or attempt == self.max_retries:
                return (status, payload, batch_id), shared
        raise AssertionError("unreachable")

    async def _once(self, key: str, body: dict[str, Any], sample_index: int) -> Waited:
        st, _ = self._here()
        if not st.ready:
            async with st.recovered:
                if not st.ready:
                    await self._recover(st)
                    st.ready = True
        live = st.live.get(key)
        if live is not None:  # submitted before (by this loop or a process that died): wait for it, never resend
            shared = key in live.futures
            fut = live.futures.setdefault(key, asyncio.get_running_loop().create_future())
            if live.task is None:
                live.task = self._spawn(st, self._collect(st, live))
            return await fut, shared
        model = str(body.get("model") or "")
        queued = st.queue.setdefault(model, {})
        shared = key in queued
        if not shared:
            queued[key] = (body, sample_index, asyncio.get_running_loop().create_future())
        if st.flusher is None:
            st.flusher = self._spawn(st, self._flush(st))
        return await queued[key][2], shared

    def _spawn(self, st: _LoopState, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)
        return task

    async def _recover(self, st: _LoopState) -> None:
        """Adopt the journal's pending batches of this base_url (see batch_journal for the states)."""
        _, sdk = self._here()
        for record in self.journal.records(self.base_url):
            if record.state == "prepared":
                self.journal.close(record.model_copy(update={"state": "abandoned"}))
                continue
            if record.state == "uploaded":
                found = await self._find(sdk, record.name)
                if found is None:
                    self.journal.close(record.model_copy(update={"state": "abandoned"}))
                    continue
                record = self.journal.save(record.model_copy(update={"state": "submitted", "batch_id": found}))
            if record.state == "submitted":
                live = _Live(record)
                for r in record.requests:
                    st.live[r.key] = live
                self._say(f"resuming batch {record.batch_id} ({len(record.requests)} requests, {record.model})")

    async def _find(self, sdk: Any, name: str) -> str | None:
        """The id of the batch created with metadata `selfimprove_batch = name`, if any (newest 1,000 batches)."""
        seen = 0
        async for batch in sdk.batches.list(limit=100):
            if (batch.metadata or {}).get("selfimprove_batch") == name:
                return batch.id
            seen += 1
            if seen >= 1000:
                break
        return None

    async def _flush(self, st: _LoopState) -> None:
        """Wait until no request has joined the queue for `gather_s`, then submit it, one batch per model."""
        try:
            size = -1
            while size != (size := sum(len(q) for q in st.queue.values())):
                await asyncio.sleep(self.gather_s)
            queue, st.queue, st.flusher = st.queue, {}, None
            for model, items in sorted(queue.items()):
                keys = list(items)
                for i in range(0, len(keys), self.max_requests):
                    chunk = {k: items[k] for k in keys[i:i + self.max_requests]}
                    try:
                        await self._submit(st, model, chunk)
                    except Exception as exc:  # noqa: BLE001 - every waiter hears why
                        for _, _, fut in chunk.values():
                            if not fut.done():
                                fut.set_exception(unavailable(exc, self.base_url))
        finally:
            if st.flusher is asyncio.current_task():
                st.flusher = None

    async def _submit(self, st: _LoopState, model: str,
                      items: dict[str, tuple[dict[str, Any], int, asyncio.Future]]) -> None:
        _, sdk = self._here()
        requests = tuple(BatchRequest(key=k, sample_index=idx) for k, (_, idx, _) in items.items())
        record = BatchRecord(name=batch_name(list(items)), base_url=self.base_url, model=model, requests=requests)
        data = self.journal.write_input(record.name, [
            {"custom_id": r.custom_id, "method": "POST", "url": ENDPOINT, "body": items[r.key][0]} for r in requests])
        self.journal.save(record)
        uploaded = await sdk.files.create(file=(f"{record.name}.jsonl", data), purpose="batch")
        record = self.journal.save(record.model_copy(update={"state": "uploaded", "input_file_id": uploaded.id}))
        batch = await sdk.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
                                         metadata={"selfimprove_batch": record.name})
        record = self.journal.save(record.model_copy(update={"state": "submitted", "batch_id": batch.id,
                                                             "status": batch.status}))
        self._say(f"submitted batch {batch.id}: {len(requests)} {model} requests")
        live = _Live(record, {k: fut for k, (_, _, fut) in items.items()})
        for k in items:
            st.live[k] = live
        live.task = self._spawn(st, self._collect(st, live))

    async def _collect(self, st: _LoopState, live: _Live) -> None:
        """Poll the batch until it ends, cache its results, resolve its waiters."""
        try:
            answers = await self._results(live.record)
        except Exception as exc:  # noqa: BLE001 - every waiter hears why
            error = exc if isinstance(exc, LLMUnavailable) else unavailable(exc, self.base_url)
            for fut in live.futures.values():
                if not fut.done():
                    fut.set_exception(error)
            for r in live.record.requests:
                st.live.pop(r.key, None)
            return
        for r in live.record.requests:
            st.live.pop(r.key, None)
            fut = live.futures.get(r.key)
            if fut is not None and not fut.done():
                fut.set_result(answers[r.key])
        await self._close_when_idle(st)

    async def _close_when_idle(self, st: _LoopState) -> None:
        if self._sdk is not None and not st.queue and st.flusher is None and \
                not any(lv.task is not None and not lv.task.done() and lv.task is not asyncio.current_task()
                        for lv in st.live.values()):
            sdk, self._sdk = self._sdk, None
            await sdk.close()

    async def _results(self, record: BatchRecord) -> dict[str, Answer]:
        _, sdk = self._here()
        last = None
        while True:
            batch = await sdk.batches.retrieve(record.batch_id)
            if batch.status in DONE:
                break
            counts = batch.request_counts
            progress = f"{batch.status} {counts.completed + counts.failed}/{counts.total}" if counts else batch.status
            if progress != last:
                self._say(f"batch {batch.id}: {progress}")
                last = progress
            await asyncio.sleep(self.poll_s)
        if batch.status == "failed":  # nothing ran: closed, so that a re-run does not wait for it again
            self.journal.close(record.model_copy(update={"state": "failed", "status": batch.status}))
            raise refused(batch)
        lines = await read_lines(sdk, batch)
        answers = {r.key: answer(lines.get(r.custom_id), batch.id, batch.status) for r in record.requests}
        if self.cache is not None:
            bodies = self.journal.bodies(record.name)
            for r in record.requests:
                status, payload, _ = answers[r.key]
                if status == 200 and payload.get("choices"):
                    self.cache.put(r.key, bodies[r.custom_id], r.sample_index, payload, None)
        done = sum(1 for a in answers.values() if a[0] == 200)
        state = "cancelled" if batch.status == "cancelled" else "collected"
        self.journal.close(record.model_copy(update={"state": state, "status": batch.status, "completed": done,
                                                     "failed": len(answers) - done}))
        if batch.status == "cancelled":
            raise cancelled(batch, done, len(answers))
        unrun = sum(1 for status, _, _ in answers.values() if status != 200 and retryable(status))
        if batch.status == "expired":
            self._say(f"batch {batch.id} expired before every request ran: {done} answered, {unrun} unanswered go "
                      f"out again in a follow-up batch (each request at most {self.max_retries} times; then it is "
                      "a failed call whose error says batch_expired)")
        else:
            self._say(f"collected batch {batch.id}: {done} answered, {len(answers) - done} failed")
        return answers

    async def aclose(self) -> None:
        if self._loop is not None and self._loop is asyncio.get_running_loop():
            for task in list(self._state.tasks):
                task.cancel()
            await asyncio.gather(*self._state.tasks, return_exceptions=True)
            if self._sdk is not None:
                await self._sdk.close()
        self._loop, self._state, self._sdk = None, _LoopState(), None


def batch_transport(client: BatchClient) -> Any:
    """An httpx2 async transport that sends every chat-completions request through `client` (put it under the
    caching transport, which tells it each request's cache key)."""
    import httpx2

    class BatchTransport(httpx2.AsyncBaseTransport):
        sends_batches = True  # the caching transport reserves its calls' budget at the batch price

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            await request.aread()
            call = request.extensions.get(CALL_EXTENSION)
            if call is None or request.method != "POST" or not request.url.path.endswith("/chat/completions"):
                raise LLMUnavailable(f"batch mode sends chat completions only, not {request.method} "
                                     f"{request.url.path}", hint="run without --batch")
            (status, payload, batch_id), shared = await client.complete(call[0], json.loads(request.content), call[1])
            headers = [("content-type", "application/json")] + ([(BATCH_HEADER, batch_id)] if batch_id else []) \
                + ([(SHARED_HEADER, "1")] if shared else [])
            return httpx2.Response(status, headers=headers, content=canonical_json(payload), request=request)

        async def aclose(self) -> None:
            await client.aclose()

    return BatchTransport()
