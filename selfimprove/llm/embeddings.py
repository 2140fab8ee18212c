"""`OpenAIEmbeddings`: batched embeddings through the official `openai` SDK (`client.embeddings.create`), cached.

- Cache: the same content-addressed directory as chat calls (`<run>/cache/llm/`, `CallCache`), keyed on the
  request body: `digest({"endpoint": "embeddings", "request": <the JSON body>, "sample_index": 0})`. The body
  holds the model, the batch of inputs, `encoding_format` and `dimensions`; host, headers and key are not part
  of it. A hit is answered inside the SDK's HTTP transport, so a re-run sends nothing and gets the same floats.
- Ledger: every attempt sent is booked (the SDK's retries happen above the transport), with the usage's
  `prompt_tokens`; a hit is booked as a cache hit. A budget reserves each request's worst case (prompt tokens
  bounded by the UTF-8 size of its inputs) before it is sent.
- Inputs: a text longer than `max_chars` is cut (8,000 characters stays under the 8,191-token limit of
  OpenAI's embedding models for any text of at least one character per token); an empty text is sent as
  `(empty)` (the API refuses empty strings). Batches of `batch_size` inputs per request, `encoding_format="float"`
  (the most widely supported by OpenAI-compatible servers).
- Errors: anything that stops `embed` from returning one finite vector per text — an HTTP error after the SDK's
  retries, an unreachable endpoint, a malformed 200 — raises `EmbeddingsFailed` (a SelfimproveError) naming the
  endpoint, model and cause. The caller decides whether that is fatal (snapshot falls back to TF-IDF).
- API key: from the environment variable *named* by `api_key_env`, kept in memory only; a placeholder for a
  loopback base_url without one (`resolve_api_key`). Error messages never carry it: a 401/403's text (which
  may quote the key) is replaced, and the key or anything shaped like one is masked in other errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from selfimprove.core.errors import SelfimproveError
from selfimprove.llm.accounting import Ledger
from selfimprove.llm.cache import CallCache, embeddings_key  # noqa: F401 - embeddings_key re-exported
from selfimprove.llm.httpx_cache import CachingTransport
from selfimprove.llm.openai_chat import resolve_api_key

DEFAULT_MODEL = "text-embedding-3-small"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
EMPTY_TEXT = "(empty)"
_KEY_SHAPED = re.compile(r"sk-[\w*.-]+")


class EmbeddingsFailed(SelfimproveError):
    """The embeddings endpoint did not return one vector per text."""


class OpenAIEmbeddings:
    """Embeds texts with one model at one OpenAI-compatible endpoint."""

    def __init__(self, base_url: str, api_key_env: str = "OPENAI_API_KEY", *, model: str = DEFAULT_MODEL,
                 cache: CallCache | str | Path | None = None, ledger: Ledger | None = None, batch_size: int = 64,
                 max_chars: int = 8000, dimensions: int | None = None, timeout: float = 60.0,
                 max_retries: int = 4):
        if batch_size < 1 or max_chars < 1:
            raise ValueError("batch_size and max_chars must be at least 1")
        self.base_url, self.api_key_env, self.model = base_url, api_key_env, model
        self.cache = CallCache(cache) if isinstance(cache, (str, Path)) else cache
        self.ledger = ledger if ledger is not None else Ledger()
        self.batch_size, self.max_chars, self.dimensions = batch_size, max_chars, dimensions
        self.timeout, self.max_retries = timeout, max_retries
        self._api_key = resolve_api_key(base_url, api_key_env)
        self._client: Any = None

    @classmethod
    def from_endpoint(cls, endpoint: Any, **kwargs: Any) -> OpenAIEmbeddings:
        """From a config `Endpoint` (base_url, api_key_env, model, timeout_s, max_retries)."""
        return cls(endpoint.base_url or DEFAULT_BASE_URL, endpoint.api_key_env,
                   model=endpoint.model or DEFAULT_MODEL, timeout=endpoint.timeout_s,
                   max_retries=endpoint.max_retries, **kwargs)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIEmbeddings({self.base_url!r}, model={self.model!r}, key from ${self.api_key_env})"

    def _sdk(self) -> Any:
        if self._client is None:
            import openai

            transport = CachingTransport(self.cache, self.ledger, httpx2.HTTPTransport())
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=self.max_retries, timeout=self.timeout,
                http_client=httpx2.Client(transport=transport, timeout=self.timeout))
        return self._client

    def embed(self, texts: Sequence[str]) -> Any:
        """A float64 numpy matrix with one row per text, in order (n x dimensions)."""
        import numpy as np

        inputs = [(t[: self.max_chars] if t else EMPTY_TEXT) for t in texts]
        rows: list[list[float]] = []
        for start in range(0, len(inputs), self.batch_size):
            rows.extend(self._batch(inputs[start: start + self.batch_size]))
        if not rows:
            return np.zeros((0, self.dimensions or 0))
        matrix = np.array(rows, dtype=np.float64)
        if matrix.ndim != 2 or not np.isfinite(matrix).all():
            raise self._failed("the vectors are not all finite and of one length")
        return matrix

    def _batch(self, batch: list[str]) -> list[list[float]]:
        import openai

        extra = {"dimensions": self.dimensions} if self.dimensions else {}
        try:
            response = self._sdk().embeddings.create(model=self.model, input=batch, encoding_format="float",
                                                     **extra)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:  # their text may quote the key
            raise self._failed(f"HTTP {e.status_code}: the endpoint refused the key from ${self.api_key_env}"
                               ) from None
        except openai.APIStatusError as e:
            raise self._failed(f"HTTP {e.status_code}: {self._redact(_short(e))}") from None
        except openai.APIError as e:  # connection errors and timeouts, after the SDK's retries
            raise self._failed(f"{type(e).__name__}: {self._redact(_short(e.__cause__ or e))}") from None
        data = sorted(response.data or [], key=lambda d: d.index)
        if [d.index for d in data] != list(range(len(batch))):
            raise self._failed(f"{len(data)} vectors for {len(batch)} inputs")
        vectors = [d.embedding for d in data]
        if not all(isinstance(v, list) and v for v in vectors):
            raise self._failed("a vector is missing or not a list of floats")
        return vectors

    def _redact(self, text: str) -> str:
        """Error text goes into warnings and reports: never let it carry the key, or anything key-shaped."""
        return _KEY_SHAPED.sub("sk-***", text.replace(self._api_key, "***"))

    def _failed(self, cause: str) -> EmbeddingsFailed:
        return EmbeddingsFailed(f"embeddings from {self.base_url} (model {self.model}) failed: {cause}",
                                hint="check [split.embeddings] (base_url, model, api_key_env) and that the "
                                     "endpoint is up")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAIEmbeddings:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(err: Any, limit: int = 200) -> str:
    msg = getattr(err, "message", None) or str(err)
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"
