"""Bounded memory: pull writes its raw tables batch by batch through an external sort, snapshot reads the spans in
batches and writes the dataset through one; the artifacts are those of one big batch (same rows, order and
content digests), whatever the batch size, arrival order, duplicates or ties."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest
from fixtures.span_rows import T0, span_row, workspace, write_spans

from selfimprove.stages.pull import Puller
from selfimprove.stages.snapshot import snapshot
from selfimprove.store import documents, sorted_table
from selfimprove.store.runs import Workspace
from selfimprove.store.sorted_table import SortedTable
from selfimprove.telemetry.files import FileSource


def test_sorted_table_orders_as_a_stable_pandas_sort_with_nulls_first(tmp_path):
    rng = random.Random(7)
    n = 3000
    frame = pd.DataFrame({
        "key": [rng.choice(["b", "a", None, "é", "Z", "ab"]) for _ in range(n)],
        "at": pd.Series([None if rng.random() < 0.1 else T0 + timedelta(seconds=rng.randint(0, 40))
                         for _ in range(n)], dtype="datetime64[us, UTC]"),
        "row": range(n)})
    expected = frame.sort_values(["at", "key"], kind="stable", na_position="first")["row"].tolist()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with SortedTable(table.schema, ["at", "key"], chunk_rows=400, spill_dir=tmp_path) as sorted_rows:
        for start in range(0, n, 250):
            sorted_rows.add(table.slice(start, 250))
        got = pa.concat_tables(list(sorted_rows.batches(batch_rows=333)))
        assert len(list(tmp_path.iterdir())) == 1  # spilled to its own directory ...
    assert got.column("row").to_pylist() == expected
    assert not list(tmp_path.iterdir())  # ... and removed it


def _messy_rows() -> list[dict]:
    """Spans in shuffled order, with a repeated span id (the first row wins), ties on one start time, a
    parent, and annotations on some."""
    rows = [span_row(i, evals={"correctness": ("correct", 1.0)} if i % 3 else {},
                     start=T0 + timedelta(seconds=i if i % 5 else 30)) for i in range(60)]
    rows[7]["parent_id"] = "00000000000000aa"
    random.Random(3).shuffle(rows)
    return rows + [span_row(40, model="other-model")]


@pytest.mark.parametrize("window", [{"since": "2024-05-01T12:00:05Z"},
                                    {"since": "2024-05-01T12:00:05Z", "limit": 17}])
def test_streamed_pull_equals_the_whole_frame_pull(tmp_path, window, monkeypatch):
    spans = write_spans(tmp_path / "spans.jsonl", _messy_rows())
    digests = []
    for batch_rows in (7, 10_000):  # many small batches (several spills) vs one batch
        root = workspace(tmp_path / f"ws-{batch_rows}", spans)
        monkeypatch.setattr(sorted_table, "CHUNK_ROWS", 5 if batch_rows == 7 else 50_000)
        monkeypatch.setattr(documents, "ROW_BATCH", batch_rows)
        result = Puller(root, source=FileSource(spans, batch_rows=batch_rows)).pull(**window)
        snap = snapshot(root, run=result.run)
        run = Workspace(root).open_run("support", result.run)
        outputs = {o["path"]: o["digest"] for stage in ("pull", "snapshot") for o in run.record(stage)["outputs"]}
        assert "dataset.parquet" in outputs and snap.counts["samples"] > 10
        digests.append((outputs, result.spans, result.annotations, result.first_start_time, result.last_start_time,
                        result.annotation_names, snap.model_dump(exclude={"run", "run_path", "seconds"})))
        frame = pd.read_parquet(run.path / "raw/spans.parquet")
        assert frame["span_id"].is_unique
        assert frame.equals(frame.sort_values(["start_time", "span_id"], kind="stable").reset_index(drop=True))
        if "limit" not in window:
            model = frame.set_index("span_id").loc[f"{40:016x}", "model_name"]
            assert model == "sim-small"  # the first row of a repeated span id wins
    assert digests[0] == digests[1]
    assert digests[0][1] == (17 if "limit" in window else 56)


def test_cursor_pull_streams_and_skips_what_was_pulled(tmp_path):
    rows = [span_row(i) for i in range(30)]
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    root = workspace(tmp_path / "ws", spans)
    first = Puller(root, source=FileSource(spans, batch_rows=4)).pull(until="2024-05-01T12:00:20Z")
    assert first.spans == 20
    rows += [span_row(i) for i in range(30, 35)]
    spans.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = Puller(root, source=FileSource(spans, batch_rows=4)).pull()
    assert second.since_from == "cursor" and second.spans == 15
    assert second.skipped == {"already_pulled": 20}
    third = Puller(root, source=FileSource(spans, batch_rows=4))
    with pytest.raises(Exception, match="no new spans"):
        third.pull()
    assert len(Workspace(root).runs("support")) == 2  # the empty pull left no run behind


def test_phoenix_pages_are_planned_from_start_times_whatever_order_the_server_answers_in():
    """Phoenix's select query limits without ordering (on PostgreSQL a full page is not the newest spans): the
    start times are gathered by splitting full answers, and the windows cover every span exactly once."""
    from selfimprove.telemetry.phoenix_paging import plan_windows, start_times

    rng = random.Random(1)
    data = [T0 + timedelta(seconds=rng.randint(0, 300)) for _ in range(2000)] + [T0 + timedelta(seconds=50)] * 700

    def probe(start, end, limit):  # some `limit` spans of the window, in no order
        hits = [t for t in data if (start is None or t >= start) and (end is None or t < end)]
        rng.shuffle(hits)
        return hits[:limit]

    times = start_times(probe, None, None, limit=300)
    assert sorted(times) == sorted(data)
    windows = plan_windows(times, 100)
    assert sum(n for _, _, n in windows) == len(data)
    assert all(n <= 100 or end - start == timedelta(microseconds=1) for start, end, n in windows)
    assert all(windows[i][0] >= windows[i + 1][1] for i in range(len(windows) - 1))  # newest first, disjoint
    for start, end, n in windows:
        assert n == sum(start <= t < end for t in data)
    newest = plan_windows(times, 100, limit=250)
    assert 250 <= sum(n for _, _, n in newest) < 350 and newest[:-1] == windows[:len(newest) - 1]
    assert newest[-1][1] == windows[len(newest) - 1][1]  # the last one stops once the newest 250 are covered


def _annotation_rows(n: int, seed: int) -> pd.DataFrame:
    """Annotations with every case `recover` orders: several per (span, eval), ties on both times (the later
    row wins), missing times, identifiers, human and LLM verdicts of one name, notes, and specs that change."""
    rng = random.Random(seed)
    spec = {"name": "q", "kind": "llm", "template": "{input}", "choices": {"good": 1.0, "bad": 0.0}}
    metas = [None, json.dumps({"model": "judge-a"}), json.dumps({"selfimprove.eval_spec": spec}),
             json.dumps({"selfimprove.eval_spec": {**spec, "template": "v2 {input}"}, "direction": "minimize"})]
    return pd.DataFrame({
        "span_id": [f"s{rng.randint(0, 40)}" for _ in range(n)],
        "name": [rng.choice(["q", "q", "tone", "note"]) for _ in range(n)],
        "annotator_kind": [rng.choice(["LLM", "HUMAN", None]) for _ in range(n)],
        "label": [rng.choice(["good", "bad", None]) for _ in range(n)],
        "score": [rng.choice([1.0, 0.0, None]) for _ in range(n)],
        "explanation": [rng.choice([None, "", "why"]) for _ in range(n)],
        "metadata": [rng.choice(metas) for _ in range(n)],
        "identifier": [rng.choice([None, "", "a", "b"]) for _ in range(n)],
        "created_at": pd.Series([None if rng.random() < 0.1 else T0 + timedelta(seconds=rng.randint(0, 5))
                                 for _ in range(n)], dtype="datetime64[us, UTC]"),
        "updated_at": pd.Series([None if rng.random() < 0.2 else T0 + timedelta(seconds=rng.randint(0, 5))
                                 for _ in range(n)], dtype="datetime64[us, UTC]")})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recover_in_batches_equals_the_whole_frame_sort(seed):
    """The latest verdict per (span, eval) is what a stable sort of every annotation by (updated_at, created_at,
    identifier), nulls first, keeping the last, gives; and the same specs, counts and notes come out whatever
    the batch size."""
    from selfimprove.evals.latest import eval_name
    from selfimprove.evals.recover import recover

    frame = _annotation_rows(600, seed)
    whole = recover(frame)
    df = frame.assign(ename=[eval_name(n, k) for n, k in zip(frame["name"], frame["annotator_kind"])],
                      ident=frame["identifier"].fillna(""))[lambda d: d["name"] != "note"]
    df = df.sort_values(["updated_at", "created_at", "ident"], kind="stable", na_position="first")
    latest = df.drop_duplicates(["span_id", "ename"], keep="last")
    expected = {(s, e): (lb if isinstance(lb, str) else None, None if pd.isna(sc) else sc, ex if isinstance(ex, str)
                         else None) for s, e, lb, sc, ex in zip(latest["span_id"], latest["ename"], latest["label"],
                                                               latest["score"], latest["explanation"])}
    got = {(s, e): (r.label, r.score, r.explanation) for s, evals in whole.results.items() for e, r in evals.items()}
    assert got == expected
    assert whole.counts["annotations.superseded"] == len(df) - len(latest)
    for size in (1, 7, 250):
        batched = recover(frame.iloc[i:i + size] for i in range(0, len(frame), size))
        assert batched.results == whole.results and batched.counts == whole.counts
        assert batched.specs == whole.specs and batched.notes == whole.notes
    assert whole.specs["q"].template == [  # the latest row carrying a spec names the spec used
        json.loads(m)["selfimprove.eval_spec"]["template"] for m in df[df["ename"] == "q"]["metadata"]
        if isinstance(m, str) and "eval_spec" in m][-1]
