"""The simulator's Batch API: files (upload, retrieve, content) and batches (create, retrieve, list, cancel).

The shapes are the OpenAI API's as the `openai` SDK reads them (`FileObject`, `Batch`, `CursorPage[Batch]`), so
`client.files.create(file=..., purpose="batch")`, `client.batches.create(...)`, `client.batches.retrieve(id)`,
`client.files.content(id)` work unchanged against the simulator. The life of a batch:

- create: the input file is validated at once (a JSONL line that is not a `{custom_id, method: POST, url, body}`
  object for the batch's endpoint, a repeated custom_id or a second model fails the whole batch, as the real API
  does, with `errors.data` naming the line); the batch starts `validating`;
- it is `in_progress` from the first retrieve, and due `batch_delay_s` (a knob, read at each retrieve) after it
  was created; the first retrieve after that answers every line with the simulated models, exactly as the online
  endpoint would (same body, same response), and the batch is `completed` with an output file (200s) and an
  error file (the rest: a 400 the online endpoint would give, or a simulated 500 for a `batch_error_rate` share
  of the lines, drawn from the seed, the batch id and the custom_id);
- cancel: `cancelling`, then `cancelled` at the next retrieve, every line in the error file as `batch_cancelled`;
- `batch_expire_rate` > 0: at its due time the batch ends `expired` instead, as when the real API's completion
  window closes first: a `batch_expire_rate` share of its lines (drawn like the errors) never ran and are in the
  error file as `batch_expired`, the others are answered as usual;
- `batch_fail` (an error code, e.g. `token_limit_exceeded`): every batch created meanwhile fails validation with
  it, as the real API fails a batch over the organisation's enqueued-token limit.

Only `/v1/chat/completions` batches are served. Batch and file ids count up from 1, so a seeded run is repeatable.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

ENDPOINT = "/v1/chat/completions"
Reply = tuple[int, Any]  # (HTTP status, JSON payload or raw bytes)


class BatchError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def document(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


@dataclass
class SimBatch:
    id: str
    input_file_id: str
    metadata: dict[str, str] | None
    lines: list[dict[str, Any]]
    created_at: int
    due: float  # monotonic time of creation; due at due + batch_delay_s
    status: str = "validating"
    problems: list[dict[str, Any]] = field(default_factory=list)
    stamps: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: tuple[int, int] = (0, 0)  # (completed, failed)
    usage: tuple[int, int] = (0, 0)  # (input tokens, output tokens)
    model: str | None = None

    def document(self) -> dict[str, Any]:
        done, failed = self.counts
        return {
            "id": self.id, "object": "batch", "endpoint": ENDPOINT, "completion_window": "24h",
            "input_file_id": self.input_file_id, "status": self.status, "created_at": self.created_at,
            "expires_at": self.created_at + 86_400, "metadata": self.metadata, "model": self.model,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "errors": {"object": "list", "data": self.problems} if self.problems else None,
            "request_counts": {"total": len(self.lines), "completed": done, "failed": failed},
            "usage": {"input_tokens": self.usage[0], "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": self.usage[1], "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": sum(self.usage)},
            **{f"{name}_at": self.stamps.get(name) for name in
               ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")},
        }


class BatchStore:
    """Files and batches of one simulator server. `answer(body) -> (status, payload)` is the online endpoint's
    answer to one chat-completions body; `knobs()` the server's current config."""

    def __init__(self, answer: Any, knobs: Any):
        self.answer, self.knobs = answer, knobs
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self._lock = threading.Lock()
        self._n = {"file": 0, "batch": 0}

    def _id(self, kind: str) -> str:
        self._n[kind] += 1
        return f"{kind}-sim{self._n[kind]:06d}" if kind == "file" else f"batch_sim{self._n[kind]:06d}"

    def _add_file(self, filename: str, purpose: str, data: bytes) -> SimFile:
        f = SimFile(self._id("file"), filename, purpose, data, int(time.time()))
        self.files[f.id] = f
        return f

    def route(self, route: str, parts: list[str], raw: bytes, content_type: str, query: str) -> Reply:
        """Answer one request: `route` is e.g. "GET /v1/batches/:id", `parts` the path after /v1 split on "/"."""
        from urllib.parse import parse_qs

        try:
            if route == "POST /v1/files":
                return self.upload(content_type, raw)
            if route == "GET /v1/files/:id":
                return 200, self.file(parts[1]).document()
            if route == "GET /v1/files/:id/content":
                return 200, self.file(parts[1]).data
            if route == "POST /v1/batches":
                return self.create(json.loads(raw or b"{}"))
            if route == "GET /v1/batches":
                q = parse_qs(query)
                return self.list(q.get("after", [None])[0], int(q.get("limit", ["20"])[0]))
            if route == "GET /v1/batches/:id":
                return self.retrieve(parts[1])
            if route == "POST /v1/batches/:id/cancel":
                return self.cancel(parts[1])
            return 404, {"error": {"message": f"no route {route}", "type": "not_found"}}
        except BatchError as e:
            return e.status, {"error": {"message": str(e), "type": e.kind}}
        except ValueError:
            return 400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}

    # ---- files ----
    def upload(self, content_type: str, raw: bytes) -> Reply:
        fields = _multipart(content_type, raw)
        if "file" not in fields or "purpose" not in fields:
            raise BatchError(400, "a multipart form with 'file' and 'purpose' is required")
        filename, data = fields["file"]
        purpose = fields["purpose"][1].decode()
        if purpose != "batch":
            raise BatchError(400, f"the simulator stores files for purpose 'batch' only, not {purpose!r}")
        with self._lock:
            return 200, self._add_file(filename or "upload.jsonl", purpose, data).document()

    def file(self, file_id: str) -> SimFile:
        f = self.files.get(file_id)
        if f is None:
            raise BatchError(404, f"No such File object: {file_id}")
        return f

    # ---- batches ----
    def create(self, body: Any) -> Reply:
        if not isinstance(body, dict):
            raise BatchError(400, "body must be a JSON object")
        if body.get("endpoint") != ENDPOINT:
            raise BatchError(400, f"the simulator batches {ENDPOINT} only, not {body.get('endpoint')!r}")
        if body.get("completion_window") != "24h":
            raise BatchError(400, "completion_window must be '24h'")
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
            raise BatchError(400, "metadata must be an object of at most 16 string pairs")
        with self._lock:
            source = self.file(str(body.get("input_file_id")))
            lines, problems = _parse_lines(source.data)
            if self.knobs().get("batch_fail"):
                problems.append({"code": str(self.knobs()["batch_fail"]), "line": None, "param": None,
                                 "message": "simulated: the batch was refused at validation (knob batch_fail)"})
            b = SimBatch(self._id("batch"), source.id, metadata, lines, int(time.time()), time.monotonic(),
                         problems=problems, model=lines[0]["body"].get("model") if lines and not problems else None)
            self.batches[b.id] = b
            return 200, b.document()

    def retrieve(self, batch_id: str) -> Reply:
        with self._lock:
            b = self._batch(batch_id)
            self._advance(b)
            return 200, b.document()

    def cancel(self, batch_id: str) -> Reply:
        with self._lock:
            b = self._batch(batch_id)
            if b.status in ("validating", "in_progress"):
                b.status = "cancelling"
                b.stamps["cancelling"] = int(time.time())
            elif b.status not in ("cancelling", "cancelled"):
                raise BatchError(409, f"Cannot cancel a batch with status '{b.status}'.")
            return 200, b.document()

    def list(self, after: str | None, limit: int) -> Reply:
        with self._lock:
            ids = sorted(self.batches, reverse=True)  # newest first, like the real API
            if after in self.batches:
                ids = ids[ids.index(after) + 1:]
            page = ids[:max(1, min(limit, 100))]
            return 200, {"object": "list", "data": [self.batches[i].document() for i in page],
                         "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
                         "has_more": len(ids) > len(page)}

    def _batch(self, batch_id: str) -> SimBatch:
        b = self.batches.get(batch_id)
        if b is None:
            raise BatchError(404, f"No such Batch object: {batch_id}")
        return b

    def _advance(self, b: SimBatch) -> None:
        now = int(time.time())
        if b.status == "validating":
            if b.problems:
                b.status, b.stamps["failed"] = "failed", now
                return
            b.status, b.stamps["in_progress"] = "in_progress", now
        if b.status == "cancelling":
            self._finish(b, "cancelled", run=False)
        elif b.status == "in_progress" and time.monotonic() >= b.due + float(self.knobs().get("batch_delay_s", 0)):
            self._finish(b, "expired" if float(self.knobs().get("batch_expire_rate", 0.0)) > 0 else "completed",
                         run=True)

    def _finish(self, b: SimBatch, status: str, *, run: bool) -> None:
        knobs = self.knobs()
        rate, seed = float(knobs.get("batch_error_rate", 0.0)), int(knobs.get("seed", 0))
        expire = float(knobs.get("batch_expire_rate", 0.0)) if status == "expired" else 0.0
        out, err = [], []
        usage = [0, 0]
        for n, line in enumerate(b.lines, 1):
            rid = f"batch_req_{b.id[-6:]}{n:06d}"
            if not run or random.Random(f"{seed}|{b.id}|{line['custom_id']}|expired").random() < expire:
                code, why = ("batch_cancelled", "the batch was cancelled before this request ran") if not run else \
                    ("batch_expired", "This request could not be executed before the completion window expired.")
                err.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                            "error": {"code": code, "message": why}})
                continue
            if random.Random(f"{seed}|{b.id}|{line['custom_id']}").random() < rate:
                status_code, payload = 500, {"error": {"message": "simulated batch line failure",
                                                       "type": "server_error"}}
            else:
                status_code, payload = self.answer(line["body"])
            entry = {"id": rid, "custom_id": line["custom_id"], "error": None,
                     "response": {"status_code": status_code, "request_id": f"req_{rid[10:]}", "body": payload}}
            if status_code == 200:
                u = payload.get("usage") or {}
                usage[0] += int(u.get("prompt_tokens") or 0)
                usage[1] += int(u.get("completion_tokens") or 0)
                out.append(entry)
            else:
                err.append(entry)
        b.stamps["finalizing"] = b.stamps[status] = int(time.time())
        b.status, b.counts, b.usage = status, (len(out), len(err)), (usage[0], usage[1])
        if out:
            b.output_file_id = self._add_file(f"{b.id}_output.jsonl", "batch_output", _jsonl(out)).id
        if err:
            b.error_file_id = self._add_file(f"{b.id}_error.jsonl", "batch_output", _jsonl(err)).id


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _parse_lines(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(request lines, problems) of a batch input file; any problem fails the batch."""
    lines: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()

    def bad(n: int, code: str, message: str) -> None:
        problems.append({"code": code, "line": n, "message": message, "param": None})

    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            bad(n, "invalid_json_line", "this line is not valid JSON")
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) \
                or not isinstance(line.get("body"), dict):
            bad(n, "missing_required_parameter", "each line needs a custom_id (string) and a body (object)")
            continue
        if line.get("method") != "POST" or line.get("url") != ENDPOINT:
            bad(n, "mismatched_endpoint", f"the line's method and url must be POST {ENDPOINT}")
        if line["custom_id"] in seen:
            bad(n, "duplicate_custom_id", f"custom_id {line['custom_id']!r} is used twice")
        seen.add(line["custom_id"])
        models.add(str(line["body"].get("model")))
        lines.append(line)
    if len(models) > 1:
        bad(0, "mismatched_model", f"a batch serves one model; this file names {', '.join(sorted(models))}")
    if not lines and not problems:
        bad(0, "empty_file", "the input file holds no requests")
    return lines, problems


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """{field name: (filename, bytes)} of a multipart/form-data body."""
    if not content_type.startswith("multipart/form-data"):
        raise BatchError(400, "expected a multipart/form-data upload")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out
