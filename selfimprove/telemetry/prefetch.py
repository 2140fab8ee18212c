"""Fetch per-id data in chunks on a background thread as soon as the ids are known, and hand it over later.

A source that learns span ids page by page (Phoenix) starts fetching their annotations while it is still
parsing the spans, and `pull` writes them: the server's work overlaps the client's. `chunks(ids)` then streams
what was prefetched for those ids, a chunk at a time, and fetches the rest itself, so the result is exactly what a
plain chunked fetch of `ids` would give (rows of ids not asked for are the caller's to drop); `collect(ids)` is
the same as one list.

Invariants: chunks are fetched one at a time, in the order their ids were added; an error in a prefetched
chunk is raised by the `chunks`/`collect` that needs it, never lost and never raised elsewhere; `cancel()` drops chunks
not yet started (a chunk in flight finishes and is discarded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Any


class ChunkPrefetcher:
    """`fetch_chunk(ids) -> result` run on one worker thread for chunks of at most `chunk_size` ids."""

    def __init__(self, fetch_chunk: Callable[[list[str]], Any], chunk_size: int):
        self._fetch_chunk = fetch_chunk
        self._chunk_size = chunk_size
        self._pool: ThreadPoolExecutor | None = None
        self._by_id: dict[str, Future] = {}

    def add(self, ids: Iterable[str]) -> None:
        """Start fetching the ids not added before (in chunks, in order)."""
        fresh = [i for i in dict.fromkeys(ids) if i not in self._by_id]
        for start in range(0, len(fresh), self._chunk_size):
            self._submit(fresh[start:start + self._chunk_size])

    def collect(self, ids: list[str], on_chunk: Callable[[Any, int], bool] | None = None) -> list[Any]:
        """The results of every chunk holding one of `ids` (distinct ids, in order), fetching the ids never
        added. `on_chunk(result, ids_covered)` is called per chunk as it completes; returning False stops.
        Afterwards the prefetcher is empty."""
        results = []
        with closing(self.chunks(ids)) as chunks:
            for result, covered in chunks:
                results.append(result)
                if on_chunk is not None and on_chunk(result, covered) is False:
                    break
        return results

    def chunks(self, ids: list[str]) -> Iterator[tuple[Any, int]]:
        """`collect` as a stream: (result, ids of `ids` it covers) per chunk, in the ids' order, each handed
        over as it completes. The ids are claimed when the first chunk is asked for; when the stream ends or is
        closed early the prefetcher is empty."""
        missing = [i for i in ids if i not in self._by_id]
        for start in range(0, len(missing), self._chunk_size):
            self._submit(missing[start:start + self._chunk_size])
        order: dict[Future, int] = {}
        for i in ids:
            future = self._by_id[i]
            order[future] = order.get(future, 0) + 1
        try:
            for future, covered in order.items():
                yield future.result(), covered
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop everything: chunks not started are cancelled, results held are released."""
        self._by_id = {}
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _submit(self, chunk: list[str]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        future = self._pool.submit(self._fetch_chunk, chunk)
        for i in chunk:
            self._by_id[i] = future
