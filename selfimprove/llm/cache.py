"""A content-addressed cache of chat-completions calls: request digest -> response, one file per call.

Key: `digest({"endpoint": "chat/completions", "request": <the JSON body>, "sample_index": i})` over the
canonical JSON (selfimprove.core.canonical). The body holds the model, the messages and every parameter; the
host, headers and API key are not part of it, so a simulator on another port, or another key, hits the same
entries. `sample_index` tells deliberate repeated samples of one request apart (temperature > 0).

Layout: `<root>/<hex[:2]>/<hex>.json`, written atomically (temp file, os.replace) as each call finishes. Why one file per call rather than an append-only JSONL: writers in several threads or processes
(our calls, phoenix-evals' worker threads, a re-run after a crash) need no lock and can never tear another
entry; a lookup is one `open` with no index to load; writing the same key twice is harmless (same content,
last replace wins); a crash leaves at worst an orphan temp file, never a half entry. The cost is many small
files, which the two-hex-digit shards keep manageable (~2,000 files for a 500-sample evaluation).

No fsync, deliberately: a killed process loses nothing (the written file and the rename are in the kernel), and
after a power loss an entry that did not reach the disk is missing or empty, which `get` treats as a miss (an
entry is only used when it parses and names its own key), so the worst case is paying for that call again. An
fsync per call held each of the 32 concurrency slots ~4 ms longer (~2% of the evaluation's wall time).

Only successful (200, with `choices`) non-streaming responses are stored; errors are never cached.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selfimprove.core.canonical import canonical_json, digest

ENTRY_SCHEMA = "selfimprove.llm-call/1"
ENDPOINT = "chat/completions"


def request_key(body: Mapping[str, Any], sample_index: int = 0) -> str:
    """The cache key of a chat-completions request body ("sha256:<hex>")."""
    return digest({"endpoint": ENDPOINT, "request": body, "sample_index": int(sample_index)})


def embeddings_key(body: Mapping[str, Any]) -> str:
    """The cache key of an embeddings request body ("sha256:<hex>"); never equal to a chat request's key."""
    return digest({"endpoint": "embeddings", "request": body, "sample_index": 0})


class CallCache:
    """Directory-backed call cache. Safe for concurrent readers and writers (threads and processes)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        hex_ = key.removeprefix("sha256:")
        return self.root / hex_[:2] / f"{hex_}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry `{schema, key, sample_index, request, response, latency_ms}`, or None."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(data)
        except ValueError:  # cannot happen with atomic writes; treat a damaged file as a miss
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, body: Mapping[str, Any], sample_index: int, response: Any,
            latency_ms: float | None) -> None:
        """Store one entry (a few hundred microseconds: cheap enough to call on the event loop). `latency_ms` is
        None for a call answered by a batch (it has no latency of its own)."""
        entry = {
            "schema": ENTRY_SCHEMA,
            "key": key,
            "sample_index": int(sample_index),
            "request": body,
            "response": response,
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
        }
        path = self.path(key)
        # a temp name per process and thread: concurrent writers of one key never share a temp file
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        data = canonical_json(entry)
        try:
            try:
                tmp.write_bytes(data)
            except FileNotFoundError:  # the first entry of its shard
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json")) if self.root.exists() else 0

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()
