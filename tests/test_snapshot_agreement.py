"""Judges against people in `snapshot`: a hand-made case whose percent agreement and Cohen's kappa are worked out
by hand, the threshold flag, and the table in snapshot.md and --json."""

from __future__ import annotations

import json

import pytest
from fixtures.span_rows import T0, span_row, workspace, write_annotations, write_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot

# 12 spans labelled by the judge and by a person (human first, judge second):
# both correct 6, human incorrect / judge correct 3, both incorrect 3.
# p_o = 9/12 = 0.75; human: correct 6, incorrect 6; judge: correct 9, incorrect 3;
# p_e = 6/12 * 9/12 + 6/12 * 3/12 = 0.5; kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5
PAIRS = [("correct", "correct")] * 6 + [("incorrect", "correct")] * 3 + [("incorrect", "incorrect")] * 3


def _ann(i, name, label, kind):
    return {"span_id": f"{i:016x}", "name": name, "annotator_kind": kind, "label": label,
            "score": 1.0 if label == "correct" else 0.0, "explanation": f"{kind} says {label}", "metadata": None,
            "identifier": "", "created_at": T0.isoformat(), "updated_at": T0.isoformat()}


@pytest.fixture
def ws(tmp_path):
    spans = write_spans(tmp_path / "spans.jsonl", [span_row(i) for i in range(14)])
    anns = []
    for i, (human, judge) in enumerate(PAIRS):
        anns += [_ann(i, "correctness", human, "HUMAN"), _ann(i, "correctness", judge, "LLM")]
    anns += [_ann(12, "correctness", "correct", "LLM"), _ann(13, "correctness", "incorrect", "HUMAN")]  # unpaired
    write_annotations(tmp_path / "spans.annotations.jsonl", anns)
    workspace(tmp_path, spans)
    pull(root=tmp_path, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    return tmp_path


def test_agreement_is_exact_and_the_gate_judge_is_not_flagged_at_the_default(ws):
    result = snapshot(root=ws)
    [row] = result.agreement
    assert (row.judge, row.human, row.n, row.agree, row.percent, row.kappa) == (
        "correctness", "human.correctness", 12, 9, 0.75, 0.5)
    assert row.categories == ["correct", "incorrect"] and not row.flagged
    assert not any("disagrees with people" in w for w in result.warnings)
    report = (ws / "runs" / "support" / result.run / "snapshot.md").read_text()
    assert "| `correctness` | `human.correctness` | 12 | 9 | 75% | 0.500 |  |" in report
    assert "the gate uses the replayable judges" in report


def test_a_stricter_threshold_flags_the_judge(ws):
    result = snapshot(root=ws, overrides=["evals.min_judge_kappa=0.6"])
    assert result.agreement[0].flagged
    [warning] = [w for w in result.warnings if "disagrees with people" in w]
    assert "kappa 0.50" in warning and "n=12" in warning and "below 0.6" in warning


def test_too_few_pairs_are_shown_not_flagged(ws):
    result = snapshot(root=ws, overrides=["evals.min_judge_kappa=0.9", "evals.min_agreement_pairs=20"])
    assert not result.agreement[0].flagged
    assert any("only 12 spans labelled by both" in n for n in result.notes)


def test_json_carries_the_table(ws):
    out = CliRunner().invoke(app, ["snapshot", "--root", str(ws), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["agreement"][0]["kappa"] == 0.5 and doc["agreement"][0]["n"] == 12
