"""Dogfooding: selfimprove's own LLM calls — the optimizer's, the judges' and the replays' — traced to Phoenix.

Off by default. With `[telemetry.self_trace] enabled = true`, `update` and `evaluate` run inside `self_traced`: a
tracer provider of their own (never the process's global one) exports to `endpoint` (default: the target's
Phoenix) into `project` (default `selfimprove-<target>`), the OpenAI SDK is instrumented with OpenInference for
the stage's duration, and one CHAIN span (`selfimprove.update`, `selfimprove.evaluate`) names the target, the run
and the stage, so a user can open Phoenix and read exactly what the optimizer saw and wrote. A process that has
already instrumented the OpenAI SDK itself (an app using selfimprove as a library) keeps its own instrumentation:
then only the stage span goes to the selfimprove project. Export failures never fail a stage (OpenTelemetry drops
what it cannot send and logs it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


def project_name(cfg: Any) -> str:
    return cfg.telemetry.self_trace.project or f"selfimprove-{cfg.target}"


@contextlib.contextmanager
def self_traced(cfg: Any, stage: str, run_id: str | None = None) -> Iterator[None]:
    """Trace the block's OpenAI calls to the selfimprove project when `[telemetry.self_trace]` is enabled."""
    settings = cfg.telemetry.self_trace
    if not settings.enabled:
        yield
        return
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from phoenix.otel import register

    px = cfg.telemetry.phoenix
    endpoint = (settings.endpoint or px.endpoint).rstrip("/")
    api_key = os.environ.get(px.api_key_env) if px.api_key_env else None
    provider = register(endpoint=endpoint + "/v1/traces", project_name=project_name(cfg), batch=True,
                        set_global_tracer_provider=False, verbose=False, protocol="http/protobuf",
                        **({"api_key": api_key} if api_key else {}))
    instrumentor = OpenAIInstrumentor()
    owned = not instrumentor.is_instrumented_by_opentelemetry
    if owned:
        instrumentor.instrument(tracer_provider=provider)
    meta = json.dumps({"selfimprove.target": cfg.target, "selfimprove.run": run_id, "selfimprove.stage": stage})
    try:
        with provider.get_tracer("selfimprove").start_as_current_span(
                f"selfimprove.{stage}", attributes={"openinference.span.kind": "CHAIN", "metadata": meta}):
            yield
    finally:
        if owned:
            instrumentor.uninstrument()
        provider.force_flush()
        provider.shutdown()
