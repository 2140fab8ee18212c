"""The simulator's embeddings model (`POST /v1/embeddings`): a hashed bag of words, deterministic and normalised.

Not a language model: a text's vector is the signed feature hashing of its lower-cased words (sublinear term
frequency; each word adds to four hashed coordinates) in `dimensions` dims (64 unless the request asks for
another size), L2-normalised. So texts that share words are close in cosine terms and texts that share none
are nearly orthogonal, which is all a clustering test needs. Same text, same vector, in any process.

Answers in the OpenAI shape: `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
"model", "usage": {"prompt_tokens", "total_tokens"}}`; `encoding_format="base64"` (the openai SDK's default)
gives little-endian float32 bytes in base64, as the real API does. Refused with a 400, as the real API does:
an empty string, an empty list, a non-string input, a bad `dimensions` or `encoding_format`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections import Counter
from typing import Any

from selfimprove.sim.textutil import token_count, words

DEFAULT_DIMENSIONS = 64
MAX_DIMENSIONS = 4096
MAX_INPUTS = 2048  # the real API's limit per request
_SLOTS = 4  # hashed coordinates per word


class BadEmbeddingsRequest(ValueError):
    """A request the real API would refuse with HTTP 400."""


def embed_text(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The unit vector of `text` (all zeros if it has no word at all, e.g. only punctuation)."""
    vec = [0.0] * dimensions
    for word, tf in Counter(w.lower() for w in words(text)).items():
        weight = (1.0 + math.log(tf)) / math.sqrt(_SLOTS)
        h = hashlib.blake2b(word.encode("utf-8"), digest_size=4 * _SLOTS, person=b"sim-embed").digest()
        for s in range(_SLOTS):
            n = int.from_bytes(h[4 * s: 4 * s + 4], "big")
            vec[(n >> 1) % dimensions] += weight if n & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else vec


def _inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise BadEmbeddingsRequest("'input' must be a non-empty string or a non-empty array of strings")
    if len(raw) > MAX_INPUTS:
        raise BadEmbeddingsRequest(f"'input' has {len(raw)} items; at most {MAX_INPUTS} per request")
    texts = []
    for i, item in enumerate(raw):
        if isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            item = " ".join(f"t{t}" for t in item)  # token ids: each id is a word
        if not isinstance(item, str):
            raise BadEmbeddingsRequest(f"'input[{i}]' must be a string")
        if not item:
            raise BadEmbeddingsRequest(f"'input[{i}]' is an empty string")
        texts.append(item)
    return texts


def embeddings_response(body: Any) -> dict[str, Any]:
    """The response to an embeddings request body; raises BadEmbeddingsRequest for what the API would refuse."""
    if not isinstance(body, dict):
        raise BadEmbeddingsRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadEmbeddingsRequest("'model' is required")
    texts = _inputs(body.get("input"))
    dims = body.get("dimensions")
    dims = DEFAULT_DIMENSIONS if dims is None else dims
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= MAX_DIMENSIONS:
        raise BadEmbeddingsRequest(f"'dimensions' must be an integer in [1, {MAX_DIMENSIONS}]")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadEmbeddingsRequest("'encoding_format' must be 'float' or 'base64'")
    data = []
    for i, text in enumerate(texts):
        vec: Any = embed_text(text, dims)
        if encoding == "base64":
            vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(max(1, token_count(t)) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
