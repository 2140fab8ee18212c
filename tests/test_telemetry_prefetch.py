"""ChunkPrefetcher: chunks fetched in the background in order, handed over exactly once, errors where needed."""

from __future__ import annotations

import threading
import time

import pytest

from selfimprove.telemetry.prefetch import ChunkPrefetcher


class Recorder:
    """A real chunk fetcher: returns the chunk's ids upper-cased and records every call (thread-safe)."""

    def __init__(self, fail_on: str | None = None, gate: threading.Event | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.gate = gate
        self._lock = threading.Lock()

    def __call__(self, chunk: list[str]) -> list[str]:
        if self.gate is not None:
            self.gate.wait(5)
        with self._lock:
            self.calls.append(list(chunk))
        if self.fail_on in chunk:
            raise RuntimeError(f"server error on {self.fail_on}")
        return [i.upper() for i in chunk]


def test_prefetched_chunks_are_reused_and_only_the_rest_is_fetched():
    rec = Recorder()
    pre = ChunkPrefetcher(rec, chunk_size=3)
    pre.add(["a", "b", "c", "d"])
    pre.add(["d", "e"])  # d already added: only e is new
    seen = []
    out = pre.collect(["e", "a", "x", "b"], lambda result, covered: seen.append((result, covered)) or True)
    assert rec.calls == [["a", "b", "c"], ["d"], ["e"], ["x"]]
    assert out == [["E"], ["A", "B", "C"], ["X"]]  # the chunks holding the ids asked for, in the ids' order
    assert seen == [(["E"], 1), (["A", "B", "C"], 2), (["X"], 1)]
    # collect empties it: the same ids are fetched again next time
    assert pre.collect(["a"]) == [["A"]]
    assert rec.calls[-1] == ["a"]


def test_without_add_it_is_a_plain_chunked_fetch():
    rec = Recorder()
    ids = [f"s{i}" for i in range(7)]
    out = ChunkPrefetcher(rec, chunk_size=3).collect(ids)
    assert rec.calls == [ids[:3], ids[3:6], ids[6:]]
    assert [x for chunk in out for x in chunk] == [i.upper() for i in ids]


def test_an_error_in_a_prefetched_chunk_is_raised_by_the_collect_that_needs_it():
    rec = Recorder(fail_on="b")
    pre = ChunkPrefetcher(rec, chunk_size=2)
    pre.add(["a", "b", "c"])
    assert pre.collect(["c"]) == [["C"]]  # the failed chunk is not needed here: nothing raised
    pre.add(["a", "b"])
    with pytest.raises(RuntimeError, match="server error on b"):
        pre.collect(["a"])


def test_on_chunk_false_stops_and_cancel_drops_chunks_not_started():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    pre = ChunkPrefetcher(rec, chunk_size=1)
    pre.add(["a", "b", "c", "d"])
    pre.cancel()  # "a" may be in flight; the rest never starts
    gate.set()
    time.sleep(0.3)
    assert len(rec.calls) <= 1
    pre2 = ChunkPrefetcher(Recorder(), chunk_size=1)
    got = []
    pre2.collect(["a", "b", "c"], lambda result, covered: got.append(result) or False)
    assert got == [["A"]]
