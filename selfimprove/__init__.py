"""selfimprove: self-improving LLM calls from Phoenix traces and LLM-as-judge feedback.

The commands as functions (selfimprove.api): `pull`, `snapshot`, `update`, `evaluate`, `promote`, `run`, their
async twins (`apull`, ...) and options (`PullOptions`, ...). In the application: `load_policy`, `instrument`,
`tag_policy`. Heavy modules load lazily: `import selfimprove` is cheap, so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "instrument": ("selfimprove.app.instrument", "instrument"),
    "EvalInstrumentor": ("selfimprove.app.instrument", "EvalInstrumentor"),
    "tag_policy": ("selfimprove.app.instrument", "tag_policy"),
    "load_policy": ("selfimprove.app.runtime", "load_policy"),
    "serve": ("selfimprove.app.runtime", "serve"),
    "load_config": ("selfimprove.config.load", "load_config"),
    "Workspace": ("selfimprove.store.runs", "Workspace"),
}
_API = ("pull", "snapshot", "update", "evaluate", "promote", "run", "apull", "asnapshot", "aupdate", "aevaluate",
        "apromote", "arun", "PullOptions", "SnapshotOptions", "UpdateOptions", "EvaluateOptions", "PromoteOptions",
        "RunOptions", "experiment", "aexperiment")
_LAZY |= {name: ("selfimprove.api", name) for name in _API}
_LAZY["ExperimentOptions"] = ("selfimprove.stages.experiment", "ExperimentOptions")
_LAZY |= {name: ("selfimprove.core.errors", name) for name in ("SelfimproveError", "GateFailed", "UsageError",
                                                               "IntegrityError")}
__all__ = [
    "EvalInstrumentor",
    "EvaluateOptions",
    "ExperimentOptions",
    "GateFailed",
    "IntegrityError",
    "PromoteOptions",
    "PullOptions",
    "RunOptions",
    "SelfimproveError",
    "SnapshotOptions",
    "UpdateOptions",
    "UsageError",
    "Workspace",
    "aevaluate",
    "aexperiment",
    "apromote",
    "apull",
    "arun",
    "asnapshot",
    "aupdate",
    "evaluate",
    "experiment",
    "instrument",
    "load_config",
    "load_policy",
    "promote",
    "pull",
    "run",
    "snapshot",
    "tag_policy",
    "update",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'selfimprove' has no attribute {name!r}")
