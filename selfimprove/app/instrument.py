"""Record each phoenix-evals judge's definition (EvalSpec) with its results, so `pull` recovers it from Phoenix.

`instrument()` wraps (with wrapt) what a team calls when it runs its evals offline:
- `Evaluator.evaluate` / `async_evaluate` and the overrides in `LLMEvaluator` and `ClassificationEvaluator` (so
  `create_classifier` results, bound evaluators and evaluators made before instrumenting are all covered);
- `evaluate_dataframe` / `async_evaluate_dataframe` (every evaluator's spec is registered before the run, and every
  score cell of the result carries it);
- `create_classifier` (the spec is registered when the evaluator is made);
- `llm_classify`, where an older phoenix-evals still has it (its frame has no metadata: the spec goes to the
  local registry only, named `llm_classify-<digest>`).
Each Score's metadata gains one key, `selfimprove.eval_spec` (the EvalSpec as JSON: name, kind, template, choices
with scores — or the labels of a label-only classifier — and their descriptions, judge model and provider,
invocation parameters, direction, include_explanation, and the input mapping bound with `bind_evaluator` or passed
to `evaluate`, a function recorded as null); nothing else in the results changes. `to_annotation_dataframe` carries the metadata into the span annotation logged to Phoenix.
A local registry (`registry_dir`, default `$SELFIMPROVE_EVAL_REGISTRY`, off when unset) also keeps each spec as
`<name>.json`; `snapshot` reads `<workspace>/evals/` as its fallback. Instrumenting twice is a no-op;
`uninstrument()` restores the originals.

`tag_policy(policy, variables)` tags the production calls made inside it with the policy's digest (span metadata
`selfimprove.policy_digest`) and its system prompt as the OpenInference prompt template with the call's
variables, so a sample knows which policy produced it and keeps the variables it was rendered with.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from selfimprove.core.canonical import canonical_json, digest, short
from selfimprove.core.records import EvalSpec, Policy
from selfimprove.telemetry.spans import POLICY_DIGEST_KEY

SPEC_KEY = "selfimprove.eval_spec"
REGISTRY_ENV = "SELFIMPROVE_EVAL_REGISTRY"
_INSIDE = contextvars.ContextVar("selfimprove_eval_inside", default=False)
_STATE: dict[str, Any] = {"patches": [], "owner": None}


def _json_safe(value: Any) -> Any:
    try:
        canonical_json(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def _mapping_of(mapping: Any) -> dict[str, str | None] | None:
    """An input mapping as JSON: a field path stays a string; a function (not recordable) becomes None."""
    if not isinstance(mapping, Mapping) or not mapping:
        return None
    return {str(k): v if isinstance(v, str) else None for k, v in mapping.items()}


def spec_of(evaluator: Any, input_mapping: Any = None) -> EvalSpec:
    """The EvalSpec of a phoenix-evals evaluator (LLM, classification or code). `input_mapping` is a per-call
    mapping (it wins over the one bound with `bind_evaluator`)."""
    kind = str(getattr(evaluator, "kind", None) or "llm").lower()
    template = getattr(getattr(evaluator, "prompt_template", None), "template", None)
    scores = getattr(evaluator, "label_score_map", None)
    rails = getattr(evaluator, "labels", None)  # a list, or {label: description} when choices had descriptions
    llm = getattr(evaluator, "llm", None)
    params = getattr(evaluator, "invocation_parameters", None) or {}
    return EvalSpec(
        name=str(evaluator.name), kind=kind if kind in ("llm", "code", "human") else "llm",
        template=_json_safe(template) if isinstance(template, (str, list)) else None,
        choices={str(k): float(v) for k, v in scores.items()} if scores else None,
        labels=tuple(str(r) for r in rails) if rails and not scores and isinstance(rails, (list, tuple, dict))
        else None,
        label_descriptions={str(k): str(v) for k, v in rails.items()} if isinstance(rails, dict) and rails
        else None,
        judge_model=getattr(llm, "model", None), provider=getattr(llm, "provider", None),
        invocation_params=_json_safe(dict(params)), direction=getattr(evaluator, "direction", "maximize"),
        include_explanation=bool(getattr(evaluator, "include_explanation", kind == "llm")),
        input_mapping=_mapping_of(input_mapping or getattr(evaluator, "_input_mapping", None)))


def _with_spec(scores: Any, spec: dict[str, Any]) -> Any:
    """New Score objects whose metadata also holds the spec (phoenix-evals itself copies Scores this way)."""
    if not isinstance(scores, list):
        return scores
    from phoenix.evals.evaluators import Score

    out = []
    for s in scores:
        if not isinstance(s, Score) or (s.metadata or {}).get(SPEC_KEY) == spec:
            out.append(s)
            continue
        out.append(Score(name=s.name, score=s.score, label=s.label, explanation=s.explanation,
                         metadata={**(s.metadata or {}), SPEC_KEY: spec}, kind=s.kind, direction=s.direction))
    return out


class EvalInstrumentor:
    """Wraps phoenix-evals so every Score carries its eval's spec. `specs` holds every spec seen (by name)."""

    specs: ClassVar[dict[str, EvalSpec]] = {}

    def __init__(self, registry_dir: str | os.PathLike | None = None):
        self.registry_dir = registry_dir

    @property
    def is_instrumented(self) -> bool:
        return bool(_STATE["patches"])

    def instrument(self, registry_dir: str | os.PathLike | None = None) -> EvalInstrumentor:
        """Install the wrappers (a no-op when already installed, except that a new `registry_dir` applies)."""
        if registry_dir is not None:
            self.registry_dir = registry_dir
        if _STATE["patches"]:
            if _STATE["owner"] is not None and registry_dir is not None:
                _STATE["owner"].registry_dir = registry_dir
            return self
        import wrapt
        from phoenix.evals import evaluators as ev_mod

        patches: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, name: str, wrapper: Any) -> None:
            original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            if original is None or isinstance(original, wrapt.ObjectProxy):
                return
            setattr(owner, name, wrapt.FunctionWrapper(original, wrapper))
            patches.append((owner, name, original))

        for cls in (ev_mod.Evaluator, ev_mod.LLMEvaluator, ev_mod.ClassificationEvaluator):
            patch(cls, "evaluate", self._evaluate)
            patch(cls, "async_evaluate", self._async_evaluate)
        import phoenix.evals as evals_pkg

        for module in (evals_pkg, ev_mod):
            patch(module, "evaluate_dataframe", self._evaluate_dataframe)
            patch(module, "async_evaluate_dataframe", self._async_evaluate_dataframe)
            patch(module, "create_classifier", self._create_classifier)
        for module in (evals_pkg, getattr(evals_pkg, "classify", None)):
            if module is not None and hasattr(module, "llm_classify"):
                patch(module, "llm_classify", self._llm_classify)
        _STATE["patches"], _STATE["owner"] = patches, self
        return self

    def uninstrument(self) -> None:
        """Restore every original (in reverse order). Safe to call when not instrumented."""
        for owner, name, original in reversed(_STATE["patches"]):
            setattr(owner, name, original)
        _STATE["patches"], _STATE["owner"] = [], None

    # -- bookkeeping --------------------------------------------------------------------------------------
    def record(self, spec: EvalSpec) -> dict[str, Any]:
        """Remember a spec (and save it to the registry folder, when there is one); returns its JSON form."""
        known = EvalInstrumentor.specs.get(spec.name)
        EvalInstrumentor.specs[spec.name] = spec
        folder = self.registry_dir or os.environ.get(REGISTRY_ENV)
        if folder and (known is None or known.digest != spec.digest or not _registry_file(folder, spec).exists()):
            from selfimprove.store.atomic import write_json

            write_json(_registry_file(folder, spec), {"schema": "selfimprove.eval_spec/1",
                                                      **spec.model_dump(mode="json")})
        return spec.model_dump(mode="json")

    def _spec_json(self, evaluator: Any, input_mapping: Any = None) -> dict[str, Any] | None:
        try:
            return self.record(spec_of(evaluator, input_mapping))
        except Exception:  # noqa: BLE001 - never break the user's eval run over a spec we cannot read
            return None

    # -- wrappers -----------------------------------------------------------------------------------------
    def _evaluate(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if _INSIDE.get() or instance is None:
            return wrapped(*args, **kwargs)
        token = _INSIDE.set(True)
        try:
            scores = wrapped(*args, **kwargs)
        finally:
            _INSIDE.reset(token)
        spec = self._spec_json(instance, _call_mapping(args, kwargs))
        return scores if spec is None else _with_spec(scores, spec)

    async def _async_evaluate(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if _INSIDE.get() or instance is None:
            return await wrapped(*args, **kwargs)
        token = _INSIDE.set(True)
        try:
            scores = await wrapped(*args, **kwargs)
        finally:
            _INSIDE.reset(token)
        spec = self._spec_json(instance, _call_mapping(args, kwargs))
        return scores if spec is None else _with_spec(scores, spec)

    def _evaluators(self, args: tuple, kwargs: dict) -> list[Any]:
        evaluators = kwargs.get("evaluators", args[1] if len(args) > 1 else [])
        return list(evaluators or [])

    def _stamp_frame(self, frame: Any, evaluators: list[Any]) -> Any:
        """Score cells produced by an evaluator that bypassed the method wrappers get the spec too."""
        for evaluator in evaluators:
            spec = self._spec_json(evaluator)
            column = f"{getattr(evaluator, 'name', '')}_score"
            if spec is None or column not in getattr(frame, "columns", ()):
                continue
            cells = frame[column].tolist()
            if any(isinstance(c, dict) and (c.get("metadata") or {}).get(SPEC_KEY) != spec for c in cells):
                frame[column] = [dict(c, metadata={**(c.get("metadata") or {}), SPEC_KEY: spec})
                                 if isinstance(c, dict) else c for c in cells]
        return frame

    def _evaluate_dataframe(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        evaluators = self._evaluators(args, kwargs)
        for evaluator in evaluators:
            self._spec_json(evaluator)
        return self._stamp_frame(wrapped(*args, **kwargs), evaluators)

    async def _async_evaluate_dataframe(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        evaluators = self._evaluators(args, kwargs)
        for evaluator in evaluators:
            self._spec_json(evaluator)
        return self._stamp_frame(await wrapped(*args, **kwargs), evaluators)

    def _create_classifier(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        evaluator = wrapped(*args, **kwargs)
        self._spec_json(evaluator)
        return evaluator

    def _llm_classify(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            template = kwargs.get("template", args[2] if len(args) > 2 else None)
            rails = kwargs.get("rails", args[3] if len(args) > 3 else None)
            model = kwargs.get("model", args[1] if len(args) > 1 else None)
            text = str(getattr(template, "template", template))
            spec = EvalSpec(name=f"llm_classify-{short(digest(text), 8)}", template=text,
                            judge_model=getattr(model, "model", None) or getattr(model, "model_name", None),
                            include_explanation=bool(kwargs.get("provide_explanation", False)),
                            invocation_params={"rails": list(rails or [])})
            self.record(spec)
        except Exception:
            logging.getLogger(__name__).debug("could not record the llm_classify spec", exc_info=True)
        return result


def _call_mapping(args: tuple, kwargs: dict) -> Any:
    """The `input_mapping` passed to one `evaluate(eval_input, input_mapping=None)` call, if any."""
    return kwargs.get("input_mapping", args[1] if len(args) > 1 else None)


def _registry_file(folder: str | os.PathLike, spec: EvalSpec) -> Path:
    return Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name) + ".json")


def instrument(registry_dir: str | os.PathLike | None = None) -> EvalInstrumentor:
    """`EvalInstrumentor().instrument()`: record eval specs with every phoenix-evals result from now on."""
    owner = _STATE["owner"]
    if owner is not None:
        return owner.instrument(registry_dir)
    return EvalInstrumentor(registry_dir).instrument()


def uninstrument() -> None:
    EvalInstrumentor().uninstrument()


@contextlib.contextmanager
def tag_policy(policy: Policy, variables: dict[str, Any] | None = None,
               metadata: dict[str, Any] | None = None) -> Iterator[str]:
    """Tag the OpenInference-traced LLM calls made inside with `policy`'s digest (span metadata
    `selfimprove.policy_digest`, merged into any metadata already in context) and its system prompt as the
    prompt template with this call's `variables` (snapshot keeps them per sample and replays the template
    rendered with them). A policy without `template_format` whose prompt has placeholders is taken as a template
    in its likely format (MUSTACHE with `{{var}}`, else F_STRING) when `variables` are given. Yields the digest
    of the policy as tagged (the one snapshot reads back when the app rendered the prompt the same way)."""
    from openinference.instrumentation import using_attributes
    from openinference.semconv.trace import SpanAttributes
    from opentelemetry.context import get_value

    from selfimprove.core.templates import guess_format

    if policy.template_format is None and variables:
        policy = policy.model_copy(update={"template_format": guess_format(policy.system_prompt)})
    current = get_value(SpanAttributes.METADATA)
    merged = dict(json.loads(current)) if isinstance(current, str) and current.startswith("{") else {}
    merged.update(metadata or {})
    merged[POLICY_DIGEST_KEY] = policy.digest
    with using_attributes(metadata=merged, prompt_template=policy.system_prompt,
                          prompt_template_version=short(policy.digest),
                          prompt_template_variables=dict(variables or {})):
        yield policy.digest
