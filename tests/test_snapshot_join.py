"""`snapshot` joins evals logged on parent spans from a file source, whose spans file holds whole traces (no
separate tree): counts by way, ambiguity with the pick rule, bad input by reason."""

from __future__ import annotations

from datetime import timedelta

from fixtures.span_rows import T0, span_row, workspace, write_annotations, write_spans

from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot


def chain(i, trace, parent=None, kind="CHAIN"):
    return {"context.span_id": f"{i:016x}", "context.trace_id": trace, "parent_id": parent, "name": "answer",
            "span_kind": kind, "status_code": "OK", "start_time": (T0 + timedelta(seconds=i)).isoformat(),
            "end_time": (T0 + timedelta(seconds=i + 1)).isoformat()}


def ann(span, label, name="correctness"):
    return {"span_id": span, "name": name, "annotator_kind": "LLM", "label": label,
            "score": 1.0 if label == "correct" else 0.0, "explanation": label, "metadata": None, "identifier": "",
            "created_at": T0.isoformat(), "updated_at": T0.isoformat()}


def test_parent_evals_join_one_llm_span_each_and_bad_input_is_counted(tmp_path):
    rows = []
    for t in range(6):  # trace t: chain span 100+t over LLM span t; trace 0's chain also covers LLM span 50
        trace = f"{t:032x}"
        rows.append(chain(100 + t, trace))
        rows.append({**span_row(t, trace_id=trace), "parent_id": f"{100 + t:016x}"})
    rows.append({**span_row(50, trace_id=f"{0:032x}"), "parent_id": f"{100:016x}"})
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    anns = [ann(f"{100 + t:016x}", "correct" if t % 2 else "incorrect") for t in range(6)]
    anns.append(ann(f"{999:016x}", "correct"))  # a span the file does not have
    anns.append({**ann(f"{6:016x}", "correct"), "name": "tone"})  # on a call outside the pulled window
    rows.append(span_row(6, start=T0 + timedelta(days=3)))
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    write_annotations(tmp_path / "spans.annotations.jsonl", anns)
    workspace(tmp_path, spans)
    pulled = pull(root=tmp_path, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    assert "1 annotations are on span ids the spans file does not have: not pulled" in pulled.notes
    result = snapshot(root=tmp_path)
    assert result.joins == {"correctness": {"parent": 6}}
    assert result.ambiguous == {"correctness": 1}  # chain 100 covers LLM spans 0 and 50: the last got it
    assert result.unjoined == {}
    assert any("the last LLM span by start time" in w for w in result.warnings)
    assert result.counts["missing.correctness"] == 1  # span 0: its chain's verdict went to span 50
    first = snapshot(root=tmp_path, overrides=['join.pick="first"'], force=True)
    assert first.joins == {"correctness": {"parent": 6}} and first.counts["missing.correctness"] == 1
