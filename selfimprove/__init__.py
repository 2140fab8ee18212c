"""selfimprove: self-improving LLM calls from Phoenix traces and LLM-as-judge feedback.

Heavy modules load lazily: `import selfimprove` is cheap, so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "instrument": ("selfimprove.app.instrument", "instrument"),
    "EvalInstrumentor": ("selfimprove.app.instrument", "EvalInstrumentor"),
    "tag_policy": ("selfimprove.app.instrument", "tag_policy"),
    "load_policy": ("selfimprove.app.runtime", "load_policy"),
    "load_config": ("selfimprove.config.load", "load_config"),
    "Workspace": ("selfimprove.store.runs", "Workspace"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'selfimprove' has no attribute {name!r}")
