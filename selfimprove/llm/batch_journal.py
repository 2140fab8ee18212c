"""The batch journal: what was sent to a provider's Batch API, kept in the run folder so that a restarted stage
picks its batches up instead of submitting them again.

One record per batch, `<root>/<name>.json`, beside the JSONL file that was uploaded (`<name>.jsonl`: one line
`{custom_id, method, url, body}` per request, custom_id = the request's call-cache key without its `sha256:`
prefix). A record is rewritten atomically as the batch moves on:

    prepared   the JSONL is written; nothing has left the machine
    uploaded   files.create returned `input_file_id`; the batch may or may not exist (a crash right after
               batches.create): a restart looks for it by its metadata `selfimprove_batch = <name>`
    submitted  batches.create returned `batch_id`: its requests are paid for; a restart polls it, never resends them
    collected  its results are in the call cache (written before this state is), with the counts
    cancelled  cancelled outside selfimprove: what had run is in the call cache, with the counts
    failed     the provider refused it as a whole: nothing ran
    abandoned  never submitted (a prepared record, or an uploaded one whose batch does not exist)

The last four are closed (`close`): nothing is pending on them, so the uploaded JSONL is deleted and the record
keeps the batch id, the provider's status and the counts (`n_requests`, `completed`, `failed`) but not the
request keys: a few hundred bytes per batch, an account of what was sent and paid for, whatever the run's size.
Nothing is resent because of closing: an answered request is in the call cache, which answers it before any batch
is formed; only a request with no answer there (a failed line, a cancelled batch's unrun ones) goes out again.

`name` is derived from the requests' keys and a fresh nonce: a follow-up batch of the very same requests (every
line of the first one failed) gets a record and a `selfimprove_batch` metadata name of its own, so it neither
overwrites the first batch's record nor can a restart mistake the first batch for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfimprove.core.canonical import digest, pretty_json

SCHEMA = "selfimprove.batch/1"
State = Literal["prepared", "uploaded", "submitted", "collected", "cancelled", "failed", "abandoned"]
CLOSED = ("collected", "cancelled", "failed", "abandoned")


class BatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    key: str
    sample_index: int = 0

    @property
    def custom_id(self) -> str:
        return self.key.removeprefix("sha256:")


class BatchRecord(BaseModel):
    """One batch's journal entry (see the module docstring for its states)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)
    schema_: str = Field(SCHEMA, alias="schema")
    name: str
    base_url: str
    model: str
    endpoint: str = "/v1/chat/completions"
    requests: tuple[BatchRequest, ...]  # empty once the record is closed
    n_requests: int = 0
    state: State = "prepared"
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None  # the provider's last status
    completed: int = 0
    failed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("n_requests"):
            data = {**data, "n_requests": len(data.get("requests") or ())}
        return data

    @property
    def pending(self) -> bool:
        return self.state in ("uploaded", "submitted")


def batch_name(keys: Sequence[str]) -> str:
    import uuid

    return "b-" + digest([*sorted(keys), uuid.uuid4().hex])[7:23]


class BatchJournal:
    """The folder of batch records (created on first write)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def input_path(self, name: str) -> Path:
        return self.root / f"{name}.jsonl"

    def write_input(self, name: str, lines: Sequence[dict[str, Any]]) -> bytes:
        """Write the JSONL to upload and return its bytes."""
        data = b"".join(json.dumps(line, ensure_ascii=False, sort_keys=True).encode() + b"\n" for line in lines)
        _write_atomic(self.input_path(name), data)
        return data

    def bodies(self, name: str) -> dict[str, dict[str, Any]]:
        """{custom_id: request body} of the batch's uploaded file."""
        out = {}
        for raw in self.input_path(name).read_bytes().splitlines():
            if raw.strip():
                line = json.loads(raw)
                out[line["custom_id"]] = line["body"]
        return out

    def save(self, record: BatchRecord) -> BatchRecord:
        _write_atomic(self.root / f"{record.name}.json", pretty_json(record.model_dump(mode="json", by_alias=True)))
        return record

    def close(self, record: BatchRecord) -> BatchRecord:
        """Save `record` (in a closed state) without its request keys, then delete its uploaded JSONL."""
        if record.state not in CLOSED:
            raise ValueError(f"a {record.state} batch record is not closed")
        closed = self.save(record.model_copy(update={"requests": (), "n_requests": record.n_requests}))
        self.input_path(record.name).unlink(missing_ok=True)
        return closed

    def records(self, base_url: str | None = None) -> Iterator[BatchRecord]:
        """Every record (of `base_url` when given), by name."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("b-*.json")):
            record = BatchRecord.model_validate_json(path.read_bytes())
            if base_url is None or record.base_url == base_url:
                yield record


def _write_atomic(path: Path, data: bytes | str) -> None:
    """Temp file, fsync, `os.replace`: a record is the old one or the new one, also after a power loss (the llm
    layer does not use store/, see docs/architecture.md)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
