"""PhoenixSource against the session's real Phoenix server: paging, time windows, annotations, faults."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fixtures.fake_openai import FakeOpenAI
from fixtures.flaky_proxy import FlakyProxy
from fixtures.traffic import rest_spans, traced_chat_calls, utc, wait_for_spans

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.telemetry import PhoenixSource, Progress, TelemetrySource
from selfimprove.telemetry.phoenix_server import free_port
from selfimprove.telemetry.raw import ANNOTATION_COLUMNS, SPAN_COLUMNS, SPAN_DTYPES, normalize_phoenix_spans

pytestmark = pytest.mark.phoenix

T0 = utc(2024, 5, 1, 12)
SPREAD, TIED = 40, 10  # 40 spans one second apart from T0, then 10 sharing one start time (T0 + 100 s)
SPLIT = 3  # and 3 sharing T0 + 35.5 s, so that a page boundary can cut through a group of ties
TOTAL = SPREAD + TIED + SPLIT


@pytest.fixture(scope="module")
def seeded(phoenix):
    """One project with 53 REST-logged spans (exact start times) and annotations on 12 of them."""
    from phoenix.client import Client

    project = f"t-seeded-{uuid.uuid4().hex[:8]}"
    client = Client(base_url=phoenix.url)
    spans = rest_spans(SPREAD, start=T0, step=timedelta(seconds=1))
    spans += rest_spans(TIED, start=T0 + timedelta(seconds=100), step=timedelta(0))
    spans += rest_spans(SPLIT, start=T0 + timedelta(seconds=35.5), step=timedelta(0))
    client.spans.log_spans(project_identifier=project, spans=spans, timeout=30)
    wait_for_spans(client, project, len(spans))
    ids = [s["context"]["span_id"] for s in spans]
    annotations = _log_annotations(client, ids[:12])
    return {"project": project, "ids": ids, "client": client, "annotations": annotations}


def _log_annotations(client, span_ids):
    import pandas as pd

    rows = []
    for i, sid in enumerate(span_ids):
        rows.append({"span_id": sid, "name": "correctness", "annotator_kind": "LLM",
                     "label": "correct" if i % 2 else "incorrect", "score": float(i % 2),
                     "explanation": f"because {i}", "identifier": "",
                     "metadata": {"template": "Q: {input}", "rails": ["correct", "incorrect"], "i": i}})
        if i < 4:  # a second eval, and a second run of it under another identifier
            for ident in ("run-1", "run-2"):
                rows.append({"span_id": sid, "name": "tone", "annotator_kind": "HUMAN", "label": "ok",
                             "score": 0.5, "explanation": None, "identifier": ident, "metadata": {}})
    client.spans.log_span_annotations_dataframe(dataframe=pd.DataFrame(rows), sync=True)
    return rows


def test_is_a_telemetry_source(phoenix):
    assert isinstance(PhoenixSource(phoenix.url, "x"), TelemetrySource)


def test_paging_past_page_size_gets_every_span_once(phoenix, seeded):
    events: list[Progress] = []
    src = PhoenixSource(phoenix.url + "/v1", seeded["project"], page_size=7)
    df = src.fetch_spans(None, None, on_progress=events.append)
    assert len(df) == TOTAL
    assert df["span_id"].is_unique
    assert set(df["span_id"]) == set(seeded["ids"])
    assert src.requests > TOTAL // 7  # it really paged
    assert events and events[-1].done == TOTAL and events[-1].kind == "spans"
    assert list(df.columns) == list(SPAN_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == {c: str(t) for c, t in
                                                         normalize_phoenix_spans(None).dtypes.items()}
    assert str(df["start_time"].dtype) == SPAN_DTYPES["start_time"]
    assert df["start_time"].is_monotonic_increasing
    assert src.notes == []


def test_more_ties_than_a_page_are_drained(phoenix, seeded):
    # all 10 tied spans at one instant, with pages of 3: the whole page shares one start time
    since = T0 + timedelta(seconds=50)
    src = PhoenixSource(phoenix.url, seeded["project"], page_size=3)
    df = src.fetch_spans(since, None)
    assert len(df) == TIED and df["span_id"].is_unique
    assert set(df["span_id"]) == set(seeded["ids"][SPREAD:SPREAD + TIED])


def test_page_boundary_inside_a_group_of_ties_loses_nothing(phoenix, seeded):
    # newest first: 39, 38, 37, 36, 35.5, 35.5 | 35.5, 35, ... : the first page ends inside the tie group
    src = PhoenixSource(phoenix.url, seeded["project"], page_size=6)
    df = src.fetch_spans(T0 + timedelta(seconds=30), T0 + timedelta(seconds=50))
    assert len(df) == 10 + SPLIT and df["span_id"].is_unique
    assert set(df["span_id"]) == set(seeded["ids"][30:SPREAD] + seeded["ids"][SPREAD + TIED:])


def test_window_is_inclusive_exclusive_and_timezone_aware(phoenix, seeded):
    src = PhoenixSource(phoenix.url, seeded["project"], page_size=4)
    df = src.fetch_spans(T0 + timedelta(seconds=10), T0 + timedelta(seconds=20))
    assert set(df["span_id"]) == set(seeded["ids"][10:20])  # since inclusive, until exclusive
    plus_two = timezone(timedelta(hours=2))
    same = src.fetch_spans((T0 + timedelta(seconds=10)).astimezone(plus_two),
                           (T0 + timedelta(seconds=20)).astimezone(plus_two))
    assert same["span_id"].tolist() == df["span_id"].tolist()
    assert str(df["start_time"].dt.tz) == "UTC"
    assert df["start_time"].min() == T0 + timedelta(seconds=10)


def test_naive_datetimes_are_rejected(phoenix, seeded):
    src = PhoenixSource(phoenix.url, seeded["project"])
    with pytest.raises(UsageError, match="no timezone"):
        src.fetch_spans(datetime(2024, 5, 1, 12), None)
    with pytest.raises(UsageError, match="no timezone"):
        src.fetch_spans(None, datetime(2024, 5, 1, 12))
    with pytest.raises(UsageError, match="empty time window"):
        src.fetch_spans(T0, T0)


def test_limit_keeps_the_newest(phoenix, seeded):
    src = PhoenixSource(phoenix.url, seeded["project"], page_size=7)
    df = src.fetch_spans(None, T0 + timedelta(seconds=35), limit=5)
    assert df["span_id"].tolist() == seeded["ids"][30:35]


def test_empty_window_and_unknown_project_are_notes_not_errors(phoenix, seeded):
    src = PhoenixSource(phoenix.url, seeded["project"])
    df = src.fetch_spans(utc(2020, 1, 1), utc(2020, 1, 2))
    assert len(df) == 0 and list(df.columns) == list(SPAN_COLUMNS)
    assert "no spans" in src.notes[0]
    ghost = PhoenixSource(phoenix.url, f"no-such-project-{uuid.uuid4().hex[:6]}")
    assert len(ghost.fetch_spans(None, None)) == 0
    assert "not found" in ghost.notes[0]
    ann = ghost.fetch_annotations(seeded["ids"][:3])
    assert len(ann) == 0 and list(ann.columns) == list(ANNOTATION_COLUMNS)
    assert "not found" in ghost.notes[-1]


def test_annotations_in_chunks_with_unknown_ids(phoenix, seeded):
    real = seeded["ids"]
    unknown = [uuid.uuid4().hex[:16] for _ in range(1300)]
    # chunk 1: 5 real + 995 unknown (several all-unknown requests of 100 ids inside); chunk 2: the rest
    ids = real[:5] + unknown[:995] + real[5:] + unknown[995:]
    events: list[Progress] = []
    src = PhoenixSource(phoenix.url, seeded["project"])
    df = src.fetch_annotations(ids, on_progress=events.append)
    expected = seeded["annotations"]
    assert len(df) == len(expected)
    assert list(df.columns) == list(ANNOTATION_COLUMNS)
    got = {(r.span_id, r.name, r.identifier): r for r in df.itertuples()}
    for row in expected:
        hit = got[(row["span_id"], row["name"], row["identifier"])]
        assert (hit.label, hit.score, hit.annotator_kind) == (row["label"], row["score"], row["annotator_kind"])
        assert json.loads(hit.metadata) == row["metadata"]
    assert str(df["created_at"].dtype) == "datetime64[us, UTC]"
    assert [e.total for e in events] == [len(ids), len(ids)] and events[-1].done == len(ids)


def test_annotations_prefetched_while_fetching_spans_equal_a_plain_fetch(phoenix, seeded):
    import pandas as pd

    src = PhoenixSource(phoenix.url, seeded["project"], page_size=20)
    spans = src.fetch_spans(None, None)
    for future in set(src._prefetch._by_id.values()):  # let the background requests finish
        future.result()
    requests = src.requests
    subset = seeded["ids"][2:9] + seeded["ids"][30:33]  # annotated and plain spans, over two pages
    got = src.fetch_annotations(subset)
    assert src.requests == requests  # everything came from the prefetch
    plain = PhoenixSource(phoenix.url, seeded["project"]).fetch_annotations(subset)
    pd.testing.assert_frame_equal(got, plain)
    assert len(got) > 0 and set(got["span_id"]) <= set(subset)  # prefetched spans not asked for are dropped
    assert len(spans) == TOTAL


def test_a_refused_long_url_falls_back_to_requests_of_100_ids(phoenix, seeded):
    from fixtures.url_limit_proxy import UrlLimitProxy

    ids = seeded["ids"][:12] + [uuid.uuid4().hex[:16] for _ in range(288)]  # 300 ids: one chunk, ~8 KB of URL
    host, port = phoenix.url.removeprefix("http://").split(":")
    with UrlLimitProxy(host, int(port), max_url=4000) as proxy:
        df = PhoenixSource(proxy.url, seeded["project"]).fetch_annotations(ids)
    assert proxy.refused == 1 and proxy.forwarded == 3  # the long request, then 3 of 100 ids (the 3rd all unknown)
    assert len(df) == len(seeded["annotations"])
    direct = PhoenixSource(phoenix.url, seeded["project"]).fetch_annotations(ids)
    assert df.equals(direct)


def test_annotations_for_only_unknown_ids_are_empty(phoenix, seeded):
    src = PhoenixSource(phoenix.url, seeded["project"])
    df = src.fetch_annotations([uuid.uuid4().hex[:16] for _ in range(3)])
    assert len(df) == 0 and list(df.columns) == list(ANNOTATION_COLUMNS)
    assert len(src.fetch_annotations([])) == 0


def test_traced_openai_calls_select_fields_match_the_full_frame(phoenix, project_name):
    """The select fast path loses nothing the raw schema holds, compared with the full default frame."""
    from openinference.instrumentation import using_metadata, using_prompt_template
    from phoenix.client import Client

    tool = {"type": "function", "function": {"name": "search", "description": "look up",
                                             "parameters": {"type": "object",
                                                            "properties": {"query": {"type": "string"}}}}}
    schema = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {
        "type": "object", "properties": {"label": {"type": "string", "enum": ["good", "bad"]}}}}}
    sys_msg = {"role": "system", "content": "Be terse."}
    def ask(text: str, **params) -> dict:
        return {"model": "fake-small", "messages": [{"role": "user", "content": text}], **params}

    requests = [{"model": "fake-small", "temperature": 0.3, "max_tokens": 32,
                 "messages": [sys_msg, {"role": "user", "content": f"q{i}"}]} for i in range(3)]
    requests += [ask("find", tools=[tool]), ask("rate", response_format=schema), ask("FAIL please")]
    with FakeOpenAI() as fake, using_metadata({"policy": "sha256:abc"}), \
            using_prompt_template(template="Q: {q}", variables={"q": "x"}, version="v1"):
        n = traced_chat_calls(phoenix.traces_endpoint, project_name, fake.base_url, requests)
    client = Client(base_url=phoenix.url)
    wait_for_spans(client, project_name, n)

    started = time.perf_counter()
    fast = PhoenixSource(phoenix.url, project_name, span_filter="span_kind == 'LLM'").fetch_spans(None, None)
    elapsed = time.perf_counter() - started
    full = normalize_phoenix_spans(client.spans.get_spans_dataframe(project_identifier=project_name, timeout=30))
    print(f"\n[fetch] {len(fast)} spans via select in {elapsed * 1000:.0f} ms")
    assert len(fast) == len(full) == n
    shaped = {"input_messages", "output_messages", "tools"}  # nested vs flat keys: same content, other shape
    same = [c for c in SPAN_COLUMNS if c not in shaped]
    assert fast[same].equals(full[same])
    for col in shaped:
        assert fast[col].isna().tolist() == full[col].isna().tolist()
    by_user = {json.loads(r.input_messages)[-1]["message"]["content"]: r for r in fast.itertuples()}
    assert json.loads(by_user["q0"].invocation_parameters) == {"model": "fake-small", "temperature": 0.3,
                                                               "max_tokens": 32}
    assert by_user["q0"].prompt_tokens > 0 and by_user["q0"].completion_tokens > 0
    assert json.loads(by_user["q0"].metadata) == {"policy": "sha256:abc"}
    assert json.loads(by_user["q0"].prompt_template) == {"template": "Q: {q}", "variables": {"q": "x"},
                                                         "version": "v1"}
    assert json.loads(by_user["find"].tools)[0]["tool"]["json_schema"]
    call = json.loads(by_user["find"].output_messages)[0]["message"]["tool_calls"][0]["tool_call"]
    assert call["function"]["name"] == "search"
    assert json.loads(by_user["rate"].invocation_parameters)["response_format"] == schema
    failed = by_user["FAIL please"]
    assert failed.status_code == "ERROR" and "500" in failed.status_message
    assert failed.output_messages != failed.output_messages  # NaN: no output on an error span


def test_transient_connection_drop_is_retried(phoenix, seeded):
    host, port = phoenix.url.removeprefix("http://").split(":")
    with FlakyProxy(host, int(port), drop_first=2) as proxy:
        src = PhoenixSource(proxy.url, seeded["project"], page_size=100, retries=4, backoff=0.01)
        df = src.fetch_spans(None, None)
    assert len(df) == TOTAL
    assert proxy.accepted >= 3 and src.requests >= 3


def test_unreachable_server_fails_clearly_after_retries():
    src = PhoenixSource(f"http://127.0.0.1:{free_port()}", "p", retries=3, backoff=0.01, timeout=2)
    with pytest.raises(SelfimproveError, match="cannot reach Phoenix") as info:
        src.fetch_spans(None, None)
    assert src.requests == 3
    assert "running" in info.value.hint
