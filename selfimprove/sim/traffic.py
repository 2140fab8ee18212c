"""Production traffic for a world: N calls through the real openai SDK, traced to Phoenix with OpenInference, then
judged with real phoenix-evals evaluators and logged back as span annotations carrying each eval's spec.

This is how the demo and the tests make "production", the way a team would: the evals run with the
EvalInstrumentor on (`evaluate_dataframe` → `to_annotation_dataframe` → `log_span_annotations_dataframe`), so each
annotation's metadata holds its eval's EvalSpec under `selfimprove.eval_spec` and the rest of selfimprove can replay
the judges offline. The instrumentation is switched off afterwards unless the process had it on already.
`eval_specs(world)` builds the same specs independently of the instrumentor (tests compare the two).

The endpoint is the simulator's by default; `base_url` + `api_key_env` (+ a real `policy["model"]` and
`judge_model`) point the same calls and judges at any OpenAI-compatible endpoint (the demo's real-model mode). The
key is read from the named variable and kept in memory only.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from selfimprove.core.errors import SelfimproveError
from selfimprove.sim.inputs import generate_inputs
from selfimprove.sim.public import default_policy, world_evals

SPEC_KEY = "selfimprove.eval_spec"
JUDGE_MODEL = "sim-judge"
JUDGE_PARAMS = {"temperature": 0.0}


def eval_specs(world: str, judge_model: str = JUDGE_MODEL) -> list[dict[str, Any]]:
    """The world's evals as EvalSpec dicts (what goes into each annotation's metadata)."""
    from selfimprove.core.records import EvalSpec

    return [EvalSpec(name=e["name"], kind="llm", template=e["template"], choices=e["choices"],
                     judge_model=judge_model, provider="openai", invocation_params=dict(JUDGE_PARAMS),
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


def _api_key(base_url: str, api_key_env: str | None) -> str:
    """The key from the variable named `api_key_env` ("sim" when none is named: the simulator takes any key)."""
    if api_key_env is None:
        return "sim"
    from selfimprove.llm.openai_chat import resolve_api_key

    return resolve_api_key(base_url, api_key_env)


def _send(world: str, n: int, *, phoenix_url: str, project: str, sim_base_url: str, policy: dict[str, Any],
          seed: int, api_key_env: str | None = None) -> tuple[list[dict[str, str]], int]:
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
        client = openai.OpenAI(base_url=sim_base_url, api_key=_api_key(sim_base_url, api_key_env), max_retries=3)
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


def world_evaluators(world: str, sim_base_url: str, *, judge_model: str = JUDGE_MODEL,
                     api_key_env: str | None = None) -> list[Any]:
    """The world's evals as real phoenix-evals ClassificationEvaluators judged by `judge_model` (default
    `sim-judge`) at `sim_base_url`, with the key from the variable named `api_key_env` (none: the simulator)."""
    from phoenix.evals import LLM, ClassificationEvaluator

    rate = 1000 if api_key_env is None else 50  # a real API starts slower; phoenix-evals backs off on 429s
    llm = LLM(provider="openai", model=judge_model, base_url=sim_base_url,
              api_key=_api_key(sim_base_url, api_key_env), initial_per_second_request_rate=rate)
    return [ClassificationEvaluator(name=e["name"], llm=llm, prompt_template=e["template"], choices=e["choices"],
                                    direction=e.get("direction", "maximize"), **JUDGE_PARAMS)
            for e in world_evals(world)]


@contextlib.contextmanager
def _eval_instrumentation():
    """The EvalInstrumentor on for the block; left on afterwards only if the process had it on before."""
    from selfimprove.evals.instrument import EvalInstrumentor, instrument

    already = EvalInstrumentor().is_instrumented
    instrument()
    try:
        yield
    finally:
        if not already:
            EvalInstrumentor().uninstrument()


def _judge_and_log(world: str, rows: list[dict[str, str]], *, client, sim_base_url: str,
                   judge_model: str = JUDGE_MODEL, api_key_env: str | None = None) -> tuple[dict[str, float], int]:
    """Judge `rows` as a team would: evaluate_dataframe → to_annotation_dataframe → log_span_annotations_dataframe,
    with the EvalInstrumentor on, so each annotation's metadata carries its eval's spec (SPEC_KEY).
    Returns ({eval: mean score}, annotations logged)."""
    import pandas as pd
    import phoenix.evals as px_evals
    from phoenix.evals.utils import to_annotation_dataframe

    evaluators = world_evaluators(world, sim_base_url, judge_model=judge_model, api_key_env=api_key_env)
    df = pd.DataFrame(rows).set_index("span_id")
    df.index.name = "context.span_id"
    with _eval_instrumentation():
        # looked up on the module inside the block: the instrumented function, as a team's code would call it
        res = px_evals.evaluate_dataframe(dataframe=df, evaluators=evaluators, hide_tqdm_bar=True)
    ann = to_annotation_dataframe(dataframe=res, score_names=[e.name for e in evaluators])
    ann = ann[ann["metadata"].notna()]  # a judge call that failed: no annotation, as in production
    ann = ann.rename(columns={"context.span_id": "span_id"})[
        ["span_id", "annotation_name", "annotator_kind", "label", "score", "explanation", "metadata"]]
    means = pd.to_numeric(ann["score"], errors="coerce").groupby(ann["annotation_name"]).mean()
    scores = {e.name: float(means.get(e.name, float("nan"))) for e in evaluators}
    if len(ann):
        client.spans.log_span_annotations_dataframe(dataframe=ann.reset_index(drop=True), sync=True)
    return scores, len(ann)


def make_traffic(world: str, n: int, *, phoenix_url: str, project: str, sim_base_url: str,
                 policy: dict[str, Any] | None = None, seed: int = 0, evals: bool = True,
                 timeout: float = 120.0, api_key_env: str | None = None,
                 judge_model: str = JUDGE_MODEL) -> dict[str, Any]:
    """Send `n` calls of `policy` (default: the world's weak default policy) for `world`'s inputs, traced into
    Phoenix `project`; wait until Phoenix shows every span; then judge and annotate them (unless `evals=False`).
    `sim_base_url` may be any OpenAI-compatible base_url: with `api_key_env` naming the variable that holds its
    key, a real `policy["model"]` and `judge_model`, the calls and judges go to that endpoint.

    Returns {world, project, calls, errors, spans, annotations, scores: {eval: mean}, span_ids, policy}.
    """
    from phoenix.client import Client

    pol = {**default_policy(world), **(policy or {})}
    since = datetime.now(UTC) - timedelta(seconds=5)
    rows, errors = _send(world, n, phoenix_url=phoenix_url, project=project, sim_base_url=sim_base_url,
                         policy=pol, seed=seed, api_key_env=api_key_env)
    client = Client(base_url=phoenix_url)
    span_ids = [r["span_id"] for r in rows]
    if rows:
        _wait_for_spans(client, project, set(span_ids), since, timeout)
    scores, annotations = {}, 0
    if evals and rows:
        scores, annotations = _judge_and_log(world, rows, client=client, sim_base_url=sim_base_url,
                                             judge_model=judge_model, api_key_env=api_key_env)
    return {"world": world, "project": project, "calls": n, "errors": errors, "spans": len(rows),
            "annotations": annotations, "scores": scores, "span_ids": span_ids, "policy": pol}
