"""Production traffic for a world: N calls through the real openai SDK, traced to Phoenix with OpenInference, then
judged with real phoenix-evals evaluators and logged back as span annotations carrying each eval's spec.

This is how the demo and the tests make "production". Each annotation's metadata holds the eval's EvalSpec under
`selfimprove.eval_spec` (what the EvalInstrumentor records for a team's own evals), so the rest of selfimprove can
replay the judges offline.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from selfimprove.core.errors import SelfimproveError
from selfimprove.sim.inputs import generate_inputs
from selfimprove.sim.public import default_policy, world_evals

SPEC_KEY = "selfimprove.eval_spec"
JUDGE_MODEL = "sim-judge"
JUDGE_PARAMS = {"temperature": 0.0}


def eval_specs(world: str) -> list[dict[str, Any]]:
    """The world's evals as EvalSpec dicts (what goes into each annotation's metadata)."""
    from selfimprove.core.records import EvalSpec

    return [EvalSpec(name=e["name"], kind="llm", template=e["template"], choices=e["choices"],
                     judge_model=JUDGE_MODEL, provider="openai", invocation_params=dict(JUDGE_PARAMS),
                     direction=e.get("direction", "maximize")).model_dump(mode="json") for e in world_evals(world)]


def _span_recorder():
    """An OpenTelemetry span processor that remembers the ids of the spans it sees end, in order."""
    from opentelemetry.sdk.trace import SpanProcessor

    class SpanRecorder(SpanProcessor):
        def __init__(self):
            self.span_ids: list[str] = []

        def on_end(self, span) -> None:
            self.span_ids.append(format(span.context.span_id, "016x"))

    return SpanRecorder()


def _send(world: str, n: int, *, phoenix_url: str, project: str, sim_base_url: str, policy: dict[str, Any],
          seed: int) -> tuple[list[dict[str, str]], int]:
    import openai
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from phoenix.otel import register

    tp = register(endpoint=phoenix_url.rstrip("/") + "/v1/traces", project_name=project, batch=True,
                  set_global_tracer_provider=False, verbose=False)
    recorder = _span_recorder()
    tp.add_span_processor(recorder, replace_default_processor=False)  # keep the OTLP exporter
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tp)
    rows, errors = [], 0
    params = {k: policy[k] for k in ("temperature", "top_p", "max_tokens") if policy.get(k) is not None}
    try:
        client = openai.OpenAI(base_url=sim_base_url, api_key="sim", max_retries=3)
        for msgs in generate_inputs(world, n, seed):
            before = len(recorder.span_ids)
            try:
                r = client.chat.completions.create(
                    model=policy["model"], messages=[{"role": "system", "content": policy["system_prompt"]}, *msgs],
                    **params)
            except openai.APIError:
                errors += 1
                continue
            if len(recorder.span_ids) == before + 1:
                rows.append({"span_id": recorder.span_ids[-1], "input": msgs[-1]["content"],
                             "output": r.choices[0].message.content or ""})
    finally:
        instrumentor.uninstrument()
        tp.force_flush()
        tp.shutdown()
    return rows, errors


def _wait_for_spans(client, project: str, span_ids: set[str], since: datetime, timeout: float) -> None:
    from phoenix.client.types.spans import SpanQuery

    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        df = client.spans.get_spans_dataframe(project_identifier=project, query=SpanQuery().select("span_id"),
                                              start_time=since, limit=len(span_ids) + 10_000, timeout=60)
        seen = set(df.index) if len(df) else set()
        if span_ids <= seen:
            return
        time.sleep(0.5)
    raise SelfimproveError(f"Phoenix shows {len(span_ids & seen)} of {len(span_ids)} traced spans after {timeout:.0f} s",
                           hint="check that the Phoenix URL is right and the server is ingesting traces")


def _judge_and_log(world: str, rows: list[dict[str, str]], *, client, sim_base_url: str) -> dict[str, float]:
    import pandas as pd
    from phoenix.evals import LLM, ClassificationEvaluator, evaluate_dataframe

    llm = LLM(provider="openai", model=JUDGE_MODEL, base_url=sim_base_url, api_key="sim",
              initial_per_second_request_rate=1000)
    specs = {s["name"]: s for s in eval_specs(world)}
    evaluators = [ClassificationEvaluator(name=s["name"], llm=llm, prompt_template=s["template"],
                                          choices=s["choices"], direction=s["direction"], **JUDGE_PARAMS)
                  for s in specs.values()]
    df = pd.DataFrame(rows).set_index("span_id")
    df.index.name = "context.span_id"
    res = evaluate_dataframe(dataframe=df, evaluators=evaluators, hide_tqdm_bar=True)
    records, scores = [], {}
    for name, spec in specs.items():
        vals = []
        for span_id, cell in res[f"{name}_score"].items():
            if not isinstance(cell, dict):  # a judge call that failed: no annotation, as in production
                continue
            meta = dict(cell.get("metadata") or {}, direction=spec["direction"], **{SPEC_KEY: spec})
            records.append({"span_id": span_id, "annotation_name": name, "annotator_kind": "LLM",
                            "label": cell.get("label"), "score": cell.get("score"),
                            "explanation": cell.get("explanation"), "metadata": meta})
            vals.append(float(cell.get("score") or 0.0))
        scores[name] = sum(vals) / len(vals) if vals else float("nan")
    if records:
        client.spans.log_span_annotations_dataframe(dataframe=pd.DataFrame(records), sync=True)
    return scores


def make_traffic(world: str, n: int, *, phoenix_url: str, project: str, sim_base_url: str,
                 policy: dict[str, Any] | None = None, seed: int = 0, evals: bool = True,
                 timeout: float = 120.0) -> dict[str, Any]:
    """Send `n` calls of `policy` (default: the world's weak default policy) for `world`'s inputs, traced into
    Phoenix `project`; wait until Phoenix shows every span; then judge and annotate them (unless `evals=False`).

    Returns {world, project, calls, errors, spans, annotations, scores: {eval: mean}, span_ids, policy}.
    """
    from phoenix.client import Client

    pol = {**default_policy(world), **(policy or {})}
    since = datetime.now(UTC) - timedelta(seconds=5)
    rows, errors = _send(world, n, phoenix_url=phoenix_url, project=project, sim_base_url=sim_base_url,
                         policy=pol, seed=seed)
    client = Client(base_url=phoenix_url)
    span_ids = [r["span_id"] for r in rows]
    if rows:
        _wait_for_spans(client, project, set(span_ids), since, timeout)
    scores = _judge_and_log(world, rows, client=client, sim_base_url=sim_base_url) if evals and rows else {}
    return {"world": world, "project": project, "calls": n, "errors": errors, "spans": len(rows),
            "annotations": len(rows) * len(scores), "scores": scores, "span_ids": span_ids, "policy": pol}
