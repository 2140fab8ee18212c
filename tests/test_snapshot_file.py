"""`snapshot` end to end from file-source fixtures: malformed spans, policies, annotations and specs, dedup,
filters, subsets, reuse and the CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.span_rows import T0, span_row, workspace, write_annotations, write_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import UsageError
from selfimprove.core.records import Checkpoint, EvalSpec
from selfimprove.dataset.table import read_samples
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run

SPEC = EvalSpec(name="correctness", template="Q: {input}\nA: {output}\nCorrect?", choices={"correct": 1.0,
                "incorrect": 0.0}, judge_model="sim-judge", provider="openai", invocation_params={"temperature": 0.0})


def _ann(span, name, label, score, kind="LLM", at=T0, meta=None, identifier=""):
    return {"span_id": f"{span:016x}", "name": name, "annotator_kind": kind, "label": label, "score": score,
            "explanation": f"{name}: {label}", "metadata": meta, "identifier": identifier,
            "created_at": at.isoformat(), "updated_at": at.isoformat()}


@pytest.fixture
def ws(tmp_path):
    """24 good calls (two policies; spans 20-23 repeat inputs 0-3), 5 malformed spans; 12-15 are 2 traces of 2."""
    rows = []
    for i in range(24):
        new = i >= 12
        rows.append(span_row(i, system="You are terse. Cite the order id." if new else "You are terse.",
                             temperature=0.0 if new else 0.2, user=f"question {i % 20}",
                             trace_id=f"{i // 2:032x}" if 12 <= i < 16 else None))
    rows.append(span_row(30, status="ERROR", output=[]))
    rows.append(span_row(31, output=[]))
    rows.append(span_row(32, invocation="{not json"))
    rows.append({**span_row(33), "attributes.llm.input_messages": [{"message.role": "wizard"}]})
    rows.append({**span_row(34), "span_kind": "CHAIN"})
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    anns = [_ann(i, "correctness", "correct" if i % 3 else "incorrect", float(bool(i % 3)),
                 meta={"selfimprove.eval_spec": SPEC.model_dump(mode="json"), "model": "sim-judge"})
            for i in range(22)]
    anns.append(_ann(5, "correctness", "correct", 1.0, at=T0 - timedelta(hours=1), identifier="old-run"))
    anns.append(_ann(13, "correctness", "incorrect", 0.0, at=T0 + timedelta(hours=1), identifier="rerun"))
    anns += [_ann(i, "correctness", "correct", 1.0, kind="HUMAN") for i in (14, 15)]
    anns += [_ann(i, "tone", "ok", None, kind="CODE") for i in range(0, 24, 2)]
    anns.append(_ann(4, "note", "remember this", None, kind="HUMAN"))
    write_annotations(tmp_path / "spans.annotations.jsonl", anns)
    workspace(tmp_path, spans)
    pull(root=tmp_path, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    return tmp_path


def test_round_trip_counts(ws):
    r = snapshot(root=ws, seed=1)
    c = r.counts
    assert (c["spans"], c["bad"], c["parsed"]) == (29, 5, 24)
    assert r.bad == {"error_status": 1, "no_output": 1, "unparseable": 2, "not_llm": 1}
    assert c["duplicates"] == 4 and c["samples"] == 20 and c["train"] + c["test"] == 20
    assert c["annotations.notes"] == 1 and c["annotations.superseded"] == 2
    # two policies; the latest is current and dedup kept its calls (12-19 and the repeats 20-23)
    assert [p.samples for p in r.policies] == [12, 12] and r.policies[0].current
    assert c["current_policy.samples"] == 12
    assert r.policy_digest == r.policies[0].digest
    evals = {e.name: e for e in r.evals}
    assert set(evals) == {"correctness", "human.correctness", "tone"} and r.primary_eval == "correctness"
    assert evals["correctness"].spec_source == "annotation" and evals["tone"].spec_source == "inferred"
    assert evals["tone"].kind == "code" and evals["human.correctness"].kind == "human"
    assert evals["correctness"].missing == 2  # spans 22 and 23 were never judged: kept and marked
    run_path = r.run_path
    ckpt = json.loads(Path(run_path, "checkpoint.json").read_text())
    assert ckpt.pop("schema") == "selfimprove.checkpoint/1"
    checkpoint = Checkpoint.model_validate(ckpt)
    assert checkpoint.policy.digest == r.policy_digest
    assert checkpoint.policy.system_prompt == "You are terse. Cite the order id." and checkpoint.policy.temperature == 0
    spec = next(e for e in checkpoint.evals if e.name == "correctness")
    assert spec == SPEC  # recovered intact from the annotation metadata
    samples = {s.sample_id: s for s in read_samples(f"{run_path}/dataset.parquet")}
    assert set(checkpoint.train_ids) | set(checkpoint.test_ids) == set(samples)
    assert samples[f"{13:016x}"].evals["correctness"].label == "incorrect"  # the latest annotation wins
    assert samples[f"{5:016x}"].evals["correctness"].label == "correct"
    assert samples[f"{14:016x}"].evals["human.correctness"].annotator_kind == "HUMAN"
    # spans 12-15 are two traces of two calls: never split across
    for a, b in ((12, 13), (14, 15)):
        assert samples[f"{a:016x}"].split == samples[f"{b:016x}"].split
    assert samples[f"{20:016x}"].history[-1].content == "question 0"
    assert f"{0:016x}" not in samples  # its input repeats in span 20, from the current policy
    assert "error_status | 1" in Path(run_path, "snapshot.md").read_text()
    assert verify_run(Workspace(ws).open_run("support", r.run))["stages"] == 2


def test_reuse_force_and_settings_change_the_key(ws):
    first = snapshot(root=ws)
    again = snapshot(root=ws)
    assert again.reused and again.counts == first.counts
    assert snapshot(root=ws, force=True).reused is False
    other = snapshot(root=ws, seed=5, test_size=0.5)
    assert not other.reused and other.counts["test"] >= 8


def test_filters_policy_choice_and_subsets(ws):
    old = snapshot(root=ws, filters=["policy!=" + snapshot(root=ws).policy_digest])
    assert old.counts["samples"] == 12 and old.policies[0].model == "sim-small" and len(old.policies) == 1
    chosen = snapshot(root=ws, policy=old.policy_digest[7:15])
    assert chosen.policy_digest == old.policy_digest and chosen.counts["samples"] == 20
    low = snapshot(root=ws, filters=["score.correctness<0.5"])
    correctness = next(e for e in low.evals if e.name == "correctness")
    assert low.counts["samples"] == 9 and (correctness.mean_score, correctness.missing) == (0.0, 0)
    assert snapshot(root=ws, max_samples=7).counts["samples"] == 7
    div = snapshot(root=ws, max_samples=6, diverse=True)
    assert div.counts["samples"] == 6 and div.counts["dropped.max_samples"] == 14
    with pytest.raises(UsageError, match="no usable samples"):
        snapshot(root=ws, filters=["model=nope"])
    with pytest.raises(UsageError, match="matches 0"):
        snapshot(root=ws, policy="ffff")


def test_feedback_collapse_warning_and_primary_from_config(tmp_path):
    rows = [span_row(i, model="sim-judge") for i in range(6)]
    anns = [_ann(i, "correctness", "correct", 1.0, meta={"selfimprove.eval_spec": SPEC.model_dump(mode="json")})
            for i in range(6)]
    write_annotations(tmp_path / "spans.annotations.jsonl", anns)
    workspace(tmp_path, write_spans(tmp_path / "spans.jsonl", rows), extra='[evals]\nprimary = "missing"\n')
    pull(root=tmp_path, since="2024-05-01")
    with pytest.raises(UsageError, match="primary eval 'missing'"):
        snapshot(root=tmp_path)
    r = snapshot(root=tmp_path, config=None, overrides=["evals.primary=correctness"])
    assert any(w.startswith("feedback collapse") for w in r.warnings)


def test_cli_snapshot_json(ws):
    out = CliRunner().invoke(app, ["snapshot", "--root", str(ws), "--test-size", "0.25", "--seed", "3",
                                   "--filter", "model=sim-small", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["schema"] == "selfimprove.snapshot/1" and doc["filters"] == ["model=sim-small"]
    assert doc["counts"]["samples"] == 20
    frame = pd.read_parquet(f"{doc['run_path']}/dataset.parquet")
    assert sorted(frame.columns)[:3] == ["completion_tokens", "eval.correctness.annotator_kind",
                                         "eval.correctness.explanation"]
    bad = CliRunner().invoke(app, ["snapshot", "--root", str(ws), "--filter", "colour=red", "--json"])
    assert bad.exit_code == 2 and "unknown filter key" in json.loads(bad.stdout)["error"]
