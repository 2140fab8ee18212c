"""Production traffic for a world: N calls through the real openai SDK, traced to Phoenix with OpenInference, then
judged with real phoenix-evals evaluators and logged back as span annotations carrying each eval's spec.

This is how the demo and the tests make "production", the way a team would: the evals run with the
EvalInstrumentor on (`evaluate_dataframe` → `to_annotation_dataframe` → `log_span_annotations_dataframe`), so each
annotation's metadata holds its eval's EvalSpec under `selfimprove.eval_spec` and the rest of selfimprove can replay
the judges offline. The instrumentation is switched off afterwards unless the process had it on already.
`eval_specs(world)` builds the same specs independently of the instrumentor (tests compare the two).

`shapes` (`selfimprove.sim.traffic_shapes.TrafficShapes`) makes the calls look like a real app's: a system prompt
template rendered per call inside openinference's `using_prompt_template`, multi-turn histories, tool definitions
and tool_choice; the default changes nothing.

The endpoint is the simulator's by default; `base_url` + `api_key_env` (+ a real `policy["model"]` and
`judge_model`) point the same calls and judges at any OpenAI-compatible endpoint (the demo's real-model mode). The
key is read from the named variable and kept in memory only.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.sim.inputs import generate_inputs
from selfimprove.sim.public import default_policy, world_evals
from selfimprove.sim.traffic_shapes import TrafficShapes, judge_input, judged_output

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
          seed: int, api_key_env: str | None = None, chain: bool = False, shapes: TrafficShapes | None = None,
          served: Any = None) -> tuple[list[dict[str, Any]], int]:
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
    shapes = shapes or TrafficShapes()
    params.update(shapes.params())
    prompt = policy["system_prompt"]
    earlier = generate_inputs(world, n, seed + 7919) if shapes.turns > 1 else []
    try:
        client = openai.OpenAI(base_url=sim_base_url, api_key=_api_key(sim_base_url, api_key_env), max_retries=3)
        tracer = tp.get_tracer("selfimprove.sim.traffic")
        for i, msgs in enumerate(generate_inputs(world, n, seed)):
            before = len(recorder.span_ids)
            history = shapes.history(msgs, earlier, i)
            with _chain_spans(tracer, chain) as parents:
                try:
                    if served is not None:  # the app asks what to serve (e.g. selfimprove.serve with a user key)
                        with served(i) as args:
                            r = client.chat.completions.create(**{**args, "messages": [*args["messages"],
                                                                                          *history]})
                    else:
                        with shapes.marked(prompt, i):
                            r = client.chat.completions.create(
                                model=policy["model"],
                                messages=[{"role": "system", "content": shapes.system(prompt, i)}, *history],
                                **params)
                except openai.APIError:
                    errors += 1
                    continue
                if len(recorder.span_ids) == before + 1:
                    row = {"span_id": recorder.span_ids[-1], "input": judge_input(history),
                           "output": judged_output(r.choices[0].message), **parents}
                    variables = shapes.call_variables(i)
                    rows.append(row if variables is None else {**row, "variables": variables})
    finally:
        instrumentor.uninstrument()
        tp.force_flush()
        tp.shutdown()
    return rows, errors


@contextlib.contextmanager
def _chain_spans(tracer: Any, chain: bool):
    """With `chain`, the call runs inside an agent root span and a chain span under it, as an agent or chain app
    traces it (OpenInference span kinds AGENT and CHAIN); yields {"parent_id", "root_id", "trace_id"} (empty
    without)."""
    if not chain:
        yield {}
        return
    with tracer.start_as_current_span("support-agent", attributes={"openinference.span.kind": "AGENT"}) as root, \
            tracer.start_as_current_span("answer", attributes={"openinference.span.kind": "CHAIN"}) as parent:
        yield {"parent_id": format(parent.get_span_context().span_id, "016x"),
               "root_id": format(root.get_span_context().span_id, "016x"),
               "trace_id": format(root.get_span_context().trace_id, "032x")}


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
    from selfimprove.app.instrument import EvalInstrumentor, instrument

    already = EvalInstrumentor().is_instrumented
    instrument()
    try:
        yield
    finally:
        if not already:
            EvalInstrumentor().uninstrument()


def _judge_and_log(world: str, rows: list[dict[str, str]], *, client, sim_base_url: str,
                   judge_model: str = JUDGE_MODEL, api_key_env: str | None = None, eval_on: str = "span",
                   humans: float = 0.0, human_flip: float = 0.0, seed: int = 0, evaluators: list[Any] | None = None
                   ) -> tuple[dict[str, float], int, dict[str, dict[str, int]]]:
    """Judge `rows` as a team would: evaluate_dataframe → to_annotation_dataframe → log_span_annotations_dataframe,
    with the EvalInstrumentor on, so each annotation's metadata carries its eval's spec (SPEC_KEY).
    Returns ({eval: mean score}, annotations logged, {eval: {"reviewed", "disagree"}} of the simulated people)."""
    import pandas as pd
    import phoenix.evals as px_evals
    from phoenix.evals.utils import to_annotation_dataframe

    evaluators = evaluators or world_evaluators(world, sim_base_url, judge_model=judge_model,
                                                api_key_env=api_key_env)
    df = pd.DataFrame([{k: r[k] for k in ("span_id", "input", "output")} for r in rows]).set_index("span_id")
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
    if eval_on != "span":  # the app logs its evals on the chain parent, the root or the trace, not the LLM span
        target = {r["span_id"]: r[f"{eval_on}_id"] for r in rows}  # (a trace id under eval_on="trace")
        ann = ann.assign(span_id=ann["span_id"].map(target))
    people: dict[str, dict[str, int]] = {}
    if humans > 0:
        reviews = human_reviews(world, ann, humans, human_flip, seed)
        judged = {(r.span_id, r.annotation_name): r.label for r in ann.itertuples()}
        for r in reviews.itertuples():
            count = people.setdefault(r.annotation_name, {"reviewed": 0, "disagree": 0})
            count["reviewed"] += 1
            count["disagree"] += r.label != judged[(r.span_id, r.annotation_name)]
        ann = pd.concat([ann.assign(identifier=""), reviews], ignore_index=True)
    if len(ann):
        if eval_on == "trace":  # Phoenix trace annotations
            client.traces.log_trace_annotations_dataframe(
                dataframe=ann.rename(columns={"span_id": "trace_id"}).reset_index(drop=True), sync=True)
        else:
            client.spans.log_span_annotations_dataframe(dataframe=ann.reset_index(drop=True), sync=True)
    return scores, len(ann), people


def human_reviews(world: str, ann: Any, share: float, flip: float, seed: int) -> Any:
    """Simulated people reviewing a seeded `share` of the judged calls, on the span the judge's annotation sits
    on (Phoenix annotator_kind HUMAN, same eval name). A reviewer gives the judge's label, except on a seeded
    `flip` share where they give the other one: a known disagreement to measure agreement against."""
    import hashlib

    import pandas as pd

    def draw(*parts: Any) -> float:
        return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12

    choices = {e["name"]: e["choices"] for e in world_evals(world)}
    out = []
    for row in ann.itertuples():
        if share <= 0 or draw(seed, "review", row.span_id, row.annotation_name) >= share:
            continue
        label = row.label
        if draw(seed, "flip", row.span_id, row.annotation_name) < flip:
            labels = list(choices[row.annotation_name])
            label = labels[(labels.index(label) + 1) % len(labels)] if label in labels else label
        out.append({"span_id": row.span_id, "annotation_name": row.annotation_name, "annotator_kind": "HUMAN",
                    "label": label, "score": choices[row.annotation_name].get(label),
                    "explanation": f"reviewer: {label}", "metadata": {"reviewer": "sim"},
                    "identifier": "review"})  # Phoenix upserts on (span, name, identifier): not the judge's ''
    return pd.DataFrame(out, columns=[*ann.columns, "identifier"])


def make_traffic(world: str, n: int, *, phoenix_url: str, project: str, sim_base_url: str,
                 policy: dict[str, Any] | None = None, seed: int = 0, evals: bool = True,
                 timeout: float = 120.0, api_key_env: str | None = None,
                 judge_model: str = JUDGE_MODEL, chain: bool = False, eval_on: str = "span",
                 humans: float = 0.0, human_flip: float = 0.0, shapes: TrafficShapes | None = None,
                 evaluators: list[Any] | None = None, served: Any = None) -> dict[str, Any]:
    """Send `n` calls of `policy` (default: the world's weak default policy) for `world`'s inputs, traced into
    Phoenix `project`; wait until Phoenix shows every span; then judge and annotate them (unless `evals=False`).
    `sim_base_url` may be any OpenAI-compatible base_url: with `api_key_env` naming the variable that holds its
    key, a real `policy["model"]` and `judge_model`, the calls and judges go to that endpoint.

    An agent or chain app's shape: `chain=True` runs each call under an AGENT root and a CHAIN parent span;
    `eval_on` ("span", "parent", "root" or "trace": Phoenix trace annotations) is where the evals are logged; `humans` is the share of judged calls
    that simulated people also review (annotator_kind HUMAN), giving the judge's label except on a `human_flip`
    share. `shapes` makes the calls look like a real app's (templates, multi-turn histories, tools; see
    `TrafficShapes`). `evaluators` (phoenix-evals evaluators, e.g. code evaluators) replace the world's judges.
    `served(i)`, a context manager yielding the chat-completion arguments of call `i` (such as
    `selfimprove.serve(target, key=user)`), replaces `policy` for the calls: the app side of a rollout.

    Returns {world, project, calls, errors, spans, annotations, scores: {eval: mean}, span_ids, policy,
    parents: {llm span id: {parent, root}} (with chain), reviews: {eval: {reviewed, disagree}} (with humans),
    replies: [{span_id, input, output}] (what was judged)}, and with a template `variables` ({span_id: the
    variables that call was rendered with}).
    """
    from phoenix.client import Client

    pol = {**default_policy(world), **(policy or {})}
    since = datetime.now(UTC) - timedelta(seconds=5)
    if eval_on not in ("span", "parent", "root", "trace") or (eval_on != "span" and not chain):
        raise UsageError(f"eval_on={eval_on!r}: use span, or parent, root or trace with chain",
                         hint="pass --chain (chain=True) to log evals above the LLM span")
    rows, errors = _send(world, n, phoenix_url=phoenix_url, project=project, sim_base_url=sim_base_url,
                         policy=pol, seed=seed, api_key_env=api_key_env, chain=chain, shapes=shapes,
                         served=served)
    client = Client(base_url=phoenix_url)
    span_ids = [r["span_id"] for r in rows]
    if rows:
        traced = {r[k] for r in rows for k in ("span_id", "parent_id", "root_id") if k in r}
        _wait_for_spans(client, project, traced, since, timeout)
    scores, annotations, people = {}, 0, {}
    if evals and rows:
        scores, annotations, people = _judge_and_log(world, rows, client=client, sim_base_url=sim_base_url,
                                             judge_model=judge_model, api_key_env=api_key_env, eval_on=eval_on,
                                             humans=humans, human_flip=human_flip, seed=seed,
                                             evaluators=evaluators)
    out = {"world": world, "project": project, "calls": n, "errors": errors, "spans": len(rows),
           "annotations": annotations, "scores": scores, "span_ids": span_ids, "policy": pol,
           "parents": {r["span_id"]: {"parent": r["parent_id"], "root": r["root_id"], "trace": r["trace_id"]}
                       for r in rows if chain},
           "reviews": people,
           "replies": [{k: r[k] for k in ("span_id", "input", "output")} for r in rows]}
    if shapes is not None and shapes.variables:
        out["variables"] = {r["span_id"]: r["variables"] for r in rows}
    return out
