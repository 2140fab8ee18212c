"""Run many chat requests with bounded concurrency; results come back in request order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from selfimprove.core.errors import SelfimproveError
from selfimprove.llm.types import ChatModel, ChatRequest, ChatResult

T = TypeVar("T")
Progress = Callable[[int, int, ChatResult], None]  # (done, total, the result just finished)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code — also where an event loop is already running in this
    thread (a Jupyter notebook, an async web handler), where `asyncio.run` refuses: there it runs on a fresh loop
    in a worker thread while the caller waits. Every library function that does async work goes through here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="selfimprove-run-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def as_request(r: ChatRequest | Mapping[str, Any]) -> ChatRequest:
    """A ChatRequest from itself or a dict `{"messages": [...], "sample_index": 0, **params}`."""
    if isinstance(r, ChatRequest):
        return r
    d = dict(r)
    messages = d.pop("messages")
    index = int(d.pop("sample_index", 0))
    params = d.pop("params", {}) | d
    return ChatRequest(messages=tuple(dict(m) for m in messages), params=params, sample_index=index)


async def arun_many(
    model: ChatModel,
    requests: Sequence[ChatRequest | Mapping[str, Any]],
    *,
    concurrency: int | None = None,
    progress: Progress | None = None,
) -> list[ChatResult]:
    """Complete every request, at most `concurrency` at once (default: the model's own `concurrency`).

    A failed call is a result with `error`. On a `SelfimproveError` (budget refused, systemic failure) no
    new call starts, the calls in flight finish (they are paid for: their results reach the cache), and the
    error is raised with `.partial` set to the results so far (None where unfinished). A re-run resumes
    from the cache without paying twice.
    """
    reqs = [as_request(r) for r in requests]
    results: list[ChatResult | None] = [None] * len(reqs)
    limit = asyncio.Semaphore(concurrency or getattr(model, "concurrency", None) or max(1, len(reqs)))
    stop: list[SelfimproveError] = []
    done = 0

    async def one(i: int, r: ChatRequest) -> None:
        nonlocal done
        async with limit:
            if stop:
                return
            try:
                res = await model.complete(list(r.messages), sample_index=r.sample_index, **r.params)
            except SelfimproveError as e:
                stop.append(e)
                return
        results[i] = res
        done += 1
        if progress is not None:
            progress(done, len(reqs), res)

    tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(reqs)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:  # cancelled, interrupted, or a bug: stop everything
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if stop:
        stop[0].partial = list(results)  # type: ignore[attr-defined]
        raise stop[0]
    return [r for r in results if r is not None]


def run_many(
    model: ChatModel,
    requests: Sequence[ChatRequest | Mapping[str, Any]],
    concurrency: int | None = None,
    *,
    progress: Progress | None = None,
) -> list[ChatResult]:
    """Synchronous twin of `arun_many` (runs its own event loop; use `arun_many` inside async code)."""

    async def main() -> list[ChatResult]:
        try:
            return await arun_many(model, requests, concurrency=concurrency, progress=progress)
        finally:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    return run_sync(main())
