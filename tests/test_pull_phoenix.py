"""pull -> snapshot against the session's real Phoenix server, fed by the simulator's traffic generator (real
openai SDK calls traced with OpenInference, judged by real phoenix-evals evaluators, logged as annotations)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.traffic import phoenix_ws, rest_spans, utc, wait_for_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import EvalSpec, Policy
from selfimprove.dataset.table import read_samples
from selfimprove.stages.pull import Puller, pull
from selfimprove.stages.snapshot import snapshot
from selfimprove.telemetry.phoenix import PhoenixSource

pytestmark = pytest.mark.phoenix
T0 = utc(2024, 5, 1, 12)


@pytest.fixture(scope="module")
def sim():
    from selfimprove.sim import start_server

    server = start_server("support", seed=11)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_policies(phoenix, sim, tmp_path_factory):
    """24 judged calls of the world's default policy, then 16 of a second policy, in one project."""
    from selfimprove.sim import default_policy
    from selfimprove.sim.traffic import make_traffic

    project = "t-two-policies"
    first = make_traffic("support", 24, phoenix_url=phoenix.url, project=project, sim_base_url=sim.base_url,
                         seed=1)
    better = {**default_policy("support"), "system_prompt": "You are Acme support. Be kind and precise.",
              "temperature": 0.0}
    second = make_traffic("support", 16, phoenix_url=phoenix.url, project=project, sim_base_url=sim.base_url,
                          seed=2, policy=better)
    return {"project": project, "first": first, "second": second,
            "root": phoenix_ws(tmp_path_factory.mktemp("ws"), phoenix, project)}


def test_round_trip_with_exact_counts_and_specs(two_policies):
    from selfimprove.sim.traffic import eval_specs

    first, second, root = two_policies["first"], two_policies["second"], two_policies["root"]
    spans = first["spans"] + second["spans"]
    pulled = pull(root=root, since="2024-01-01")
    assert (pulled.spans, pulled.annotations) == (spans, first["annotations"] + second["annotations"])
    assert pulled.annotation_names == {s["name"]: spans for s in eval_specs("support")}
    assert pulled.notes == ["--since 2024-01-01 has no timezone: read as UTC (2024-01-01T00:00:00.000000+00:00)"]
    raw = pd.read_parquet(f"{pulled.run_path}/raw/spans.parquet")
    assert set(raw["span_id"]) == set(first["span_ids"] + second["span_ids"])
    snap = snapshot(root=root, run=pulled.run, seed=0)
    assert snap.counts["spans"] == spans and snap.counts["bad"] == 0
    assert snap.counts["samples"] + snap.counts["duplicates"] == spans
    assert snap.counts["train"] + snap.counts["test"] == snap.counts["samples"] and snap.counts["test"] > 0
    # two policies in one window: both identified, the latest is current
    assert [(p.samples, p.current) for p in snap.policies] == [(second["spans"], True), (first["spans"], False)]
    current = Policy(system_prompt=second["policy"]["system_prompt"], model=second["policy"]["model"],
                     temperature=second["policy"].get("temperature"), top_p=second["policy"].get("top_p"),
                     max_tokens=second["policy"].get("max_tokens"))
    assert snap.policy_digest == current.digest
    # eval specs recovered intact from the annotation metadata
    ckpt = json.loads(Path(snap.run_path, "checkpoint.json").read_text())
    assert [EvalSpec.model_validate(e) for e in ckpt["evals"]] == \
        sorted((EvalSpec.model_validate(s) for s in eval_specs("support")), key=lambda s: s.name)
    assert {e.spec_source for e in snap.evals} == {"annotation"}
    samples = read_samples(f"{snap.run_path}/dataset.parquet")
    by_span = {s.span_id: s for s in samples}
    scores = {s.span_id: s.evals["policy_compliance"].score for s in samples}
    assert all(v in (0.0, 1.0) for v in scores.values()) and len(by_span) == snap.counts["samples"]
    assert all(s.history[0].role == "system" and s.output.role == "assistant" for s in samples)


def test_paging_past_a_lowered_page_size(two_policies):
    root, project = two_policies["root"], two_policies["project"]
    spans = two_policies["first"]["spans"] + two_policies["second"]["spans"]
    from selfimprove.config.load import load_target

    cfg = load_target(root, None, [])
    source = PhoenixSource(cfg.telemetry.phoenix.endpoint, project, page_size=7)
    result = Puller(root, config=cfg, source=source).pull(since="2024-01-01T00:00Z")
    assert result.spans == spans and source.requests >= spans // 7
    raw = pd.read_parquet(f"{result.run_path}/raw/spans.parquet")
    assert raw["span_id"].is_unique and list(raw["start_time"]) == sorted(raw["start_time"])


def test_annotations_reach_the_writer_a_chunk_at_a_time_with_the_same_table(two_policies, monkeypatch):
    """With 7 span ids per annotations request, pull hands the writer a frame per chunk (not one joined frame)
    and writes the same bytes as a one-chunk pull."""
    from selfimprove.config.load import load_target
    from selfimprove.store import raw_tables
    from selfimprove.telemetry import phoenix as phoenix_module

    root, project = two_policies["root"], two_policies["project"]
    cfg = load_target(root, None, [])
    whole = Puller(root, config=cfg).pull(since="2024-01-01T00:00Z", until="2030-01-01T00:00Z")
    batches: list[int] = []
    write = raw_tables.write_annotations

    def counting(path, schema, order, frames, wanted=None):
        def seen():
            for frame in frames:
                batches.append(len(frame))
                yield frame
        return write(path, schema, order, seen(), wanted)

    monkeypatch.setattr(raw_tables, "write_annotations", counting)
    monkeypatch.setattr(phoenix_module, "ANNOTATION_CHUNK", 7)
    source = PhoenixSource(cfg.telemetry.phoenix.endpoint, project)
    chunked = Puller(root, config=cfg, source=source).pull(since="2024-01-01T00:00Z", until="2030-01-01T00:00Z")
    assert len(batches) >= whole.spans // 7 and sum(batches) == chunked.annotations == whole.annotations
    name = "raw/annotations.parquet"
    assert Path(chunked.run_path, name).read_bytes() == Path(whole.run_path, name).read_bytes()


def test_windows_timezones_and_the_incremental_cursor(phoenix, project_name, tmp_path, monkeypatch):
    from phoenix.client import Client

    client = Client(base_url=phoenix.url)
    client.spans.log_spans(project_identifier=project_name, spans=rest_spans(10, start=T0, step=timedelta(minutes=1)),
                           timeout=30)
    wait_for_spans(client, project_name, 10)
    root = phoenix_ws(tmp_path, phoenix, project_name)
    monkeypatch.setenv("TZ", "America/New_York")  # a naive --since must still mean UTC
    naive = pull(root=root, since="2024-05-01T12:03", until="2024-05-01T12:07:00+00:00")
    assert naive.spans == 4 and "read as UTC" in naive.notes[0]
    offset = pull(root=root, since="2024-05-01T14:05+02:00", until="2024-05-01T12:06Z")
    assert offset.spans == 1 and offset.first_start_time == "2024-05-01T12:05:00.000000+00:00"
    # the cursor now stands at 12:06 (the newest start seen); a late span inside the overlap and 3 new ones
    late = rest_spans(1, start=T0 + timedelta(minutes=5, seconds=30), step=timedelta(0))
    new = rest_spans(3, start=T0 + timedelta(minutes=20), step=timedelta(minutes=1))
    client.spans.log_spans(project_identifier=project_name, spans=late + new, timeout=30)
    wait_for_spans(client, project_name, 14)
    resumed = pull(root=root)
    assert resumed.since_from == "cursor" and resumed.skipped == {"already_pulled": 4}
    raw = pd.read_parquet(f"{resumed.run_path}/raw/spans.parquet")
    # the window [12:06 - overlap, now) holds 12:00-12:09 (4 of them already pulled), the late one and 3 new
    assert {s["context"]["span_id"] for s in late + new} <= set(raw["span_id"]) and resumed.spans == 14 - 4
    out = CliRunner().invoke(app, ["pull", "--root", str(root), "--json"])
    assert out.exit_code == 2 and json.loads(out.stdout)["error"].startswith(f"no new spans for project '{project_name}'")


def test_tagged_policy_with_template_variables_round_trips(phoenix, sim, project_name, tmp_path):
    import openai
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from phoenix.client import Client
    from phoenix.otel import register

    from selfimprove.app.instrument import tag_policy

    policy = Policy(system_prompt="You are support for {product}. Be brief.", model="sim-small", temperature=0.0,
                    template_format="F_STRING")
    tp = register(endpoint=phoenix.traces_endpoint, project_name=project_name, batch=True,
                  set_global_tracer_provider=False, verbose=False)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tp)
    try:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
        for i, product in enumerate(["widgets", "gadgets", "gizmos", "widgets"]):
            with tag_policy(policy, variables={"product": product}):
                client.chat.completions.create(model="sim-small", temperature=0.0, messages=[
                    {"role": "system", "content": policy.system_prompt.format(product=product)},
                    {"role": "user", "content": f"Where is my order #{100 + i}?"}])
    finally:
        instrumentor.uninstrument()
        tp.force_flush()
        tp.shutdown()
    wait_for_spans(Client(base_url=phoenix.url), project_name, 4)
    root = phoenix_ws(tmp_path, phoenix, project_name)
    pulled = pull(root=root, since="1h")
    snap = snapshot(root=root, run=pulled.run)
    assert pulled.spans == 4 and snap.policy_digest == policy.digest  # one policy despite 3 rendered prompts
    assert [p.samples for p in snap.policies] == [4] and snap.counts["samples"] == 4
    samples = read_samples(f"{snap.run_path}/dataset.parquet")  # each call keeps the variables it was rendered with
    assert sorted(s.variables["product"] for s in samples) == ["gadgets", "gizmos", "widgets", "widgets"]
    assert any("no scored eval" in w for w in snap.warnings)  # nothing judged these calls
