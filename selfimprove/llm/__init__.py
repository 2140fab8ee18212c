"""The LLM layer: async chat calls through the OpenAI SDK, with a call cache, a ledger and budgets.

    from selfimprove.llm import OpenAIChat, CallCache, Ledger, Budget, run_many
    ledger = Ledger(prices={"sim-small": {"input": 0.15, "output": 0.6}}, budget=Budget(max_usd=2.0))
    chat = OpenAIChat(base_url, "OPENAI_API_KEY", model="sim-small", cache=run_dir / "cache/llm",
                      ledger=ledger, concurrency=32)
    results = run_many(chat, [{"messages": [...], "temperature": 0}], concurrency=32)
    ledger.snapshot()   # calls, cache hits, tokens, cost

phoenix-evals judges share the same cache and ledger through `httpx_cache.phoenix_llm_kwargs`.
Names are imported lazily so that `import selfimprove.llm` does not load openai or httpx2.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OpenAIChat": "selfimprove.llm.openai_chat",
    "resolve_api_key": "selfimprove.llm.openai_chat",
    "BatchClient": "selfimprove.llm.batch",
    "BatchJournal": "selfimprove.llm.batch_journal",
    "CallCache": "selfimprove.llm.cache",
    "request_key": "selfimprove.llm.cache",
    "Budget": "selfimprove.llm.accounting",
    "BudgetExceeded": "selfimprove.llm.accounting",
    "Ledger": "selfimprove.llm.accounting",
    "LedgerSnapshot": "selfimprove.llm.accounting",
    "PriceTable": "selfimprove.llm.accounting",
    "ChatModel": "selfimprove.llm.types",
    "ChatRequest": "selfimprove.llm.types",
    "ChatResult": "selfimprove.llm.types",
    "LLMUnavailable": "selfimprove.llm.types",
    "Usage": "selfimprove.llm.types",
    "arun_many": "selfimprove.llm.run",
    "run_many": "selfimprove.llm.run",
    "AsyncCachingTransport": "selfimprove.llm.httpx_cache",
    "CachingTransport": "selfimprove.llm.httpx_cache",
    "phoenix_llm_kwargs": "selfimprove.llm.httpx_cache",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'selfimprove.llm' has no attribute {name!r}")
