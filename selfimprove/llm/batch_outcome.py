"""What a finished batch answered: its output and error files read into one answer per request, and what its end
status means for the requests that have none.

A batch ends in one of four statuses (OpenAI's Batch API):

    completed  every line ran: each is in the output file (200) or the error file (its status and body)
    expired    the completion window (24 h) closed first: the lines that ran are in the output and error files as
               for `completed`; the rest are in the error file as `batch_expired` (or missing altogether). Those
               are answered 503 "batch_expired ...", a retryable status, so the batch client sends them again in
               a follow-up batch (up to `llm.batch.max_retries`); one still unanswered after that is a failed
               call whose error says it expired — counted and reported, never dropped
    cancelled  someone cancelled it (not selfimprove): the lines that ran before are kept (they are paid for:
               their answers go to the call cache), and the stage stops with `LLMUnavailable` saying how many ran
               and that a re-run sends the rest in a new batch
    failed     the provider refused the input file as a whole (nothing ran, nothing is paid): `LLMUnavailable`
               with the provider's reasons
"""

from __future__ import annotations

import json
from typing import Any

from selfimprove.llm.types import LLMUnavailable

DONE = ("completed", "expired", "cancelled", "failed")
Answer = tuple[int, dict[str, Any], str | None]  # (HTTP status, JSON body, batch id)


def retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


async def read_lines(sdk: Any, batch: Any) -> dict[str, dict[str, Any]]:
    """{custom_id: line} of a finished batch's output and error files (the error file's line wins: none is in
    both)."""
    lines: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            content = await sdk.files.content(file_id)
            for raw in content.content.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    lines[line.get("custom_id")] = line
    return lines


def answer(line: dict[str, Any] | None, batch_id: str, status: str) -> Answer:
    """(status, body, batch id) of one output or error line; a line the batch did not return is a retryable 503
    that says so (an expired batch may leave its unrun lines out of the error file)."""
    if line is None:
        code = "batch_expired" if status == "expired" else "batch_missing"
        return 503, {"error": {"message": f"{code}: batch {batch_id} ({status}) returned nothing for this request",
                               "type": "batch_error", "code": code}}, batch_id
    response = line.get("response")
    if isinstance(response, dict) and isinstance(response.get("body"), dict):
        return int(response.get("status_code") or 500), response["body"], batch_id
    error = line.get("error") or {}
    return 503, {"error": {"message": f"{error.get('code')}: {error.get('message')}", "type": "batch_error",
                           "code": error.get("code")}}, batch_id


def refused(batch: Any) -> LLMUnavailable:
    """The error of a batch the provider failed as a whole (status `failed`)."""
    why = "; ".join((f"line {e.line}: " if e.line else "") + f"{e.code}: {e.message}" for e in batch.errors.data) \
        if batch.errors and batch.errors.data else "no reason given"
    return LLMUnavailable(f"the provider refused batch {batch.id} as a whole, nothing in it ran ({why})",
                          hint="this is a bug in how selfimprove wrote the batch, or a provider limit; "
                               "run without --batch")


def cancelled(batch: Any, answered: int, total: int) -> LLMUnavailable:
    """The error of a batch cancelled outside selfimprove, after `answered` of its `total` requests ran."""
    return LLMUnavailable(f"batch {batch.id} was cancelled (not by selfimprove): {answered} of its {total} "
                          f"requests had run and are kept in the call cache; {total - answered} never ran",
                          hint="re-run the command: the answered requests come from the cache, the others go "
                               "out in a new batch")


def unavailable(exc: BaseException, base_url: str) -> LLMUnavailable:
    status = getattr(exc, "status_code", None)
    return LLMUnavailable(f"the Batch API at {base_url} failed: {type(exc).__name__}"
                          + (f" (HTTP {status})" if status else "") + f": {str(exc)[:300]}",
                          hint="check the endpoint and key; batches already submitted are in the run folder's "
                               "batches/ journal and are picked up by a re-run")
