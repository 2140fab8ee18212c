"""Plain-Python code evaluators, registered by name.

An EvalSpec with `kind="code"` is replayed by calling the function registered under its name:

    from selfimprove.evals.code_evals import register

    @register("mentions_order_id")
    def mentions_order_id(input: str, output: str) -> bool:
        return "#" in output

The function receives `input` (the sample's input text) and `output` (the replayed output text) as keyword
arguments, and may also accept `sample` (the Sample record). It returns a bool (1.0/0.0), a number (the score),
a label string (scored through the spec's `choices`), a dict with any of label/score/explanation, or an
EvalResult. An exception is one failed judgement (a row with an error), never a crash.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from selfimprove.core.records import EvalResult, EvalSpec

CodeEval = Callable[..., Any]

_REGISTRY: dict[str, CodeEval] = {}


def register(name: str) -> Callable[[CodeEval], CodeEval]:
    """Decorator: register `fn` as the code evaluator called `name` (a later registration replaces it)."""

    def deco(fn: CodeEval) -> CodeEval:
        _REGISTRY[name] = fn
        return fn

    return deco


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> CodeEval | None:
    """The evaluator registered under `name`, or None."""
    return _REGISTRY.get(name)


def registered() -> list[str]:
    return sorted(_REGISTRY)


def call_code_eval(fn: CodeEval, spec: EvalSpec, *, input: str, output: str, sample: Any = None) -> EvalResult:
    """Call `fn` with the arguments it accepts and normalise what it returns to an EvalResult (raises on a
    result it cannot interpret)."""
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {"input": input, "output": output, "sample": sample}
    kwargs = {k: v for k, v in offered.items() if accepts_any or k in params}
    return to_eval_result(fn(**kwargs), spec)


def to_eval_result(value: Any, spec: EvalSpec) -> EvalResult:
    if isinstance(value, EvalResult):
        return value
    if isinstance(value, bool):
        label = None
        if spec.choices and len(spec.choices) == 2:
            best, worst = sorted(spec.choices, key=spec.choices.get, reverse=True)
            label = best if value else worst
            return EvalResult(label=label, score=spec.choices[label], annotator_kind="CODE")
        return EvalResult(label=str(value).lower(), score=1.0 if value else 0.0, annotator_kind="CODE")
    if isinstance(value, (int, float)):
        return EvalResult(score=float(value), annotator_kind="CODE")
    if isinstance(value, str):
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"code eval '{spec.name}' returned label {value!r}, not one of {sorted(spec.choices)}")
        return EvalResult(label=value, score=(spec.choices or {}).get(value), annotator_kind="CODE")
    if isinstance(value, dict):
        label = value.get("label")
        score = value.get("score")
        if score is None and label is not None and spec.choices:
            score = spec.choices.get(label)
        return EvalResult(label=label, score=None if score is None else float(score),
                          explanation=value.get("explanation"), annotator_kind="CODE")
    raise TypeError(f"code eval '{spec.name}' returned {type(value).__name__}; expected bool, number, label, "
                    "dict or EvalResult")
