"""Dogfooding: with `[telemetry.self_trace]` on, evaluate's own replay and judge calls land in the real Phoenix
(session fixture) under the target's selfimprove project, inside one CHAIN span naming the stage and run; the
OpenAI SDK is left uninstrumented afterwards."""

import time

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate

from selfimprove.core.records import Policy
from selfimprove.sim import default_policy, start_server
from selfimprove.stages.evaluate import evaluate

pytestmark = pytest.mark.phoenix


def test_evaluate_traces_its_own_calls_to_phoenix(tmp_path, phoenix, project_name, monkeypatch):
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from phoenix.client import Client

    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    better = candidate(Policy(**default_policy("support")).model_copy(update={"system_prompt": BETTER_PROMPT}))
    with start_server("support", seed=0) as sim:
        _ws, run, *_ = build_run(tmp_path, sim.base_url, n=6, candidates=[better], max_calls=5000)
        cfg = tmp_path / "configs" / "support.toml"
        cfg.write_text(cfg.read_text() + f'[telemetry.phoenix]\nendpoint = "{phoenix.url}"\n'
                       f'[telemetry.self_trace]\nenabled = true\nproject = "{project_name}"\n')
        evaluate(root=tmp_path, target="support", candidates="all", yes=True)
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry
    px = Client(base_url=phoenix.url)
    deadline, frame = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        frame = px.spans.get_spans_dataframe(project_identifier=project_name, limit=1000, timeout=30)
        if len(frame) and {"sim-small", "sim-judge"} <= set(frame.get("attributes.llm.model_name", [])):
            break
        time.sleep(1)
    assert frame is not None and len(frame), "no selfimprove span reached Phoenix"
    models = set(frame["attributes.llm.model_name"].dropna())
    assert {"sim-small", "sim-judge"} <= models  # replays of the candidate and the baseline, and the judges
    chain = frame[frame["name"] == "selfimprove.evaluate"]
    assert len(chain) == 1 and run.run_id in str(chain["attributes.metadata"].iloc[0])
    llm = frame[frame["span_kind"] == "LLM"]
    assert (llm["context.trace_id"] == chain["context.trace_id"].iloc[0]).mean() > 0.5  # mostly under the stage span
