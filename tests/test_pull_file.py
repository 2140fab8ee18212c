"""`pull` through the file source: window resolution, timezones, the cursor, errors, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
from fixtures.span_rows import T0, span_row, workspace, write_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import UsageError
from selfimprove.core.when import parse_when
from selfimprove.stages.pull import Puller, pull
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run
from selfimprove.telemetry.base import Progress


@pytest.fixture
def ws(tmp_path):
    rows = [span_row(i, evals={"correctness": ("correct", 1.0)} if i % 2 else {}) for i in range(6)]
    return workspace(tmp_path, write_spans(tmp_path / "spans.jsonl", rows))


def test_pull_writes_sorted_raw_tables_and_a_record(ws):
    seen: list[Progress] = []
    result = Puller(ws, on_progress=seen.append).pull(since="2024-05-01T12:00:02Z", until="2024-05-01T13:00Z")
    assert (result.spans, result.annotations, result.since_from) == (4, 2, "flag")
    assert result.since == "2024-05-01T12:00:02.000000+00:00" and result.until == "2024-05-01T13:00:00.000000+00:00"
    assert result.first_start_time.startswith("2024-05-01T12:00:02") and result.annotation_names == {"correctness": 2}
    assert result.notes == []  # an offset was given: nothing to say about timezones
    run = Workspace(ws).open_run("support", result.run)
    spans = pd.read_parquet(run.path / "raw/spans.parquet")
    assert spans["span_id"].tolist() == [f"{i:016x}" for i in range(2, 6)]
    assert str(spans["start_time"].dtype) == "datetime64[us, UTC]"
    record = run.record("pull")
    assert record["params"]["since"] == result.since and record["params"]["source"]["name"] == "file"
    assert [o["path"] for o in record["outputs"]] == ["raw/annotations.parquet", "raw/spans.parquet"]
    assert verify_run(run)["stages"] == 1
    assert {p.kind for p in seen} == {"spans", "annotations"}


def test_naive_since_is_utc_and_said_so(ws, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    result = pull(root=ws, since="2024-05-01T12:00:03", until="2024-05-01 12:00:05+00:00")
    assert result.spans == 2  # 12:00:03 and 12:00:04 UTC: the naive value was not read as New York time
    assert any("no timezone" in n and "read as UTC" in n for n in result.notes)
    result = pull(root=ws, since=datetime(2024, 5, 1, 14, 0, 3, tzinfo=timezone(timedelta(hours=2))))
    assert result.spans == 3 and result.notes[:1] != ["--since"]


def test_when_parser():
    now = datetime(2024, 5, 8, tzinfo=UTC)
    assert parse_when("7d", now).at == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_when("2024-05-01", now).naive and parse_when("2024-05-01T00:00Z", now).naive is False
    assert parse_when("2024-05-01T02:00+02:00", now).at == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="cannot read --since"):
        parse_when("last tuesday", now, "--since")


def test_incremental_pull_resumes_at_the_cursor(ws, tmp_path):
    first = pull(root=ws, until=T0 + timedelta(seconds=3))
    assert (first.spans, first.since_from) == (3, "none")
    # a late arrival inside the overlap (start 12:00:01.5) and new spans after the first window
    rows = [span_row(i) for i in range(8)] + [span_row(99, start=T0 + timedelta(seconds=1.5))]
    write_spans(tmp_path / "spans.jsonl", rows)
    second = pull(root=ws)
    assert second.since_from == "cursor" and second.skipped == {"already_pulled": 3}
    run = Workspace(ws).open_run("support", second.run)
    ids = set(pd.read_parquet(run.path / "raw/spans.parquet")["span_id"])
    assert ids == {f"{i:016x}" for i in (3, 4, 5, 6, 7, 99)}
    with pytest.raises(UsageError, match="no new spans") as err:
        pull(root=ws)
    assert "--since" in err.value.hint
    assert {r.run_id for r in Workspace(ws).runs("support")} == {first.run, second.run}  # no empty run left


def test_no_spans_is_a_usage_error_and_leaves_no_run(ws):
    with pytest.raises(UsageError, match=r"no spans for file .* since 2030-01-01") as err:
        pull(root=ws, since="2030-01-01T00:00Z", until="2030-02-01T00:00Z")
    assert "widen --since" in err.value.hint
    assert Workspace(ws).runs("support") == []
    with pytest.raises(UsageError, match="empty time window"):
        pull(root=ws, since="2024-05-02", until="2024-05-01")


def test_parent_build_is_the_production_build(ws):
    from selfimprove.core.records import Build, Policy
    from selfimprove.store.builds import move_ref, write_build

    prompts = Workspace(ws).prompts_dir
    policy = Policy(system_prompt="You are terse.", model="sim-small", temperature=0.2)
    build = Build(target="support", version=1, policy=policy, policy_digest=policy.digest)
    write_build(prompts, build)
    move_ref(prompts, build)
    result = pull(root=ws, since="2024-05-01")
    assert result.parent_build == "v0001"
    assert Workspace(ws).open_run("support").manifest()["parent_build"] == {"name": "v0001", "digest": build.digest}


def test_cli_pull_json_and_errors(ws):
    runner = CliRunner()
    out = runner.invoke(app, ["pull", "--root", str(ws), "--since", "2024-05-01", "--limit", "2", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "selfimprove.pull/1" and doc["spans"] == 2 and doc["since_from"] == "flag"
    assert any("--limit 2 reached" in n for n in doc["notes"])
    bad = runner.invoke(app, ["pull", "--root", str(ws), "--since", "1h", "--json"])
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["error"].startswith("no spans for file")
    unknown = runner.invoke(app, ["pull", "--root", str(ws), "--source", "kafka"])
    assert unknown.exit_code == 2 and "unknown source" in unknown.output
