"""Evals that cannot be replayed — annotations from Phoenix's own (project, server-side) evaluators, which carry
no recoverable spec — are read like any other annotation and kept as stored-only evals: feedback for update,
a stored baseline in the evaluation report, never a score for a candidate."""

from __future__ import annotations

import json

from fixtures.span_rows import T0, span_row, workspace, write_annotations, write_spans

from selfimprove.core.records import Checkpoint, EvalResult, EvalSpec, Message, Sample
from selfimprove.evals.judges import JudgeEndpoint, build_judges
from selfimprove.llm.accounting import Ledger
from selfimprove.stages.evaluate import stored_only_entry, stored_only_warning
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot

SPEC = EvalSpec(name="correctness", template="Q: {input}\nA: {output}\nCorrect?", choices={"correct": 1.0,
                "incorrect": 0.0}, judge_model="sim-judge", provider="openai")


def _ann(i, name, label, score, meta):
    return {"span_id": f"{i:016x}", "name": name, "annotator_kind": "LLM", "label": label, "score": score,
            "explanation": f"{name}: {label}", "metadata": meta, "identifier": "", "created_at": T0.isoformat(),
            "updated_at": T0.isoformat()}


def test_a_server_side_evaluator_is_read_and_kept_stored_only(tmp_path):
    spans = write_spans(tmp_path / "spans.jsonl", [span_row(i) for i in range(12)])
    anns = [_ann(i, "correctness", "correct", 1.0, {"selfimprove.eval_spec": SPEC.model_dump(mode="json")})
            for i in range(12)]
    # what a project evaluator leaves: a verdict and its own metadata, no template or rails we could replay
    anns += [_ann(i, "relevance", "relevant" if i % 4 else "irrelevant", float(bool(i % 4)),
                  {"evaluator_id": "RXZhbHVhdG9yOjE=", "model": "gpt-4o-mini"}) for i in range(12)]
    write_annotations(tmp_path / "spans.annotations.jsonl", anns)
    workspace(tmp_path, spans)
    pulled = pull(root=tmp_path, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    result = snapshot(root=tmp_path)
    seen = {e.name: e for e in result.evals}
    assert seen["relevance"].spec_source == "inferred" and seen["relevance"].scored == 12
    assert seen["relevance"].judge_model == "gpt-4o-mini"
    assert any("'relevance' has no recorded spec" in w for w in result.warnings)
    run = tmp_path / "runs" / "support" / pulled.run
    checkpoint = Checkpoint.model_validate({k: v for k, v in json.loads((run / "checkpoint.json").read_text()).items()
                                            if k != "schema"})
    judges, skipped = build_judges(checkpoint.evals, JudgeEndpoint(None, "sim-judge"), cache=None, ledger=Ledger())
    assert set(judges) == {"correctness"}
    assert "stored only" in skipped["relevance"] and "feedback for update" in skipped["relevance"]


def test_the_report_states_the_stored_baseline():
    def sample(i, score):
        evals = {} if score is None else {"human.ok": EvalResult(label="x", score=score)}
        return Sample(sample_id=f"s{i}", span_id=f"s{i}", trace_id="t", history=(Message(role="user", content="q"),),
                      output=Message(role="assistant", content="a"), evals=evals)

    entry = stored_only_entry("human.ok", "people's labels cannot be replayed",
                              [sample(0, 1.0), sample(1, 0.0), sample(2, 1.0), sample(3, None)])
    assert (entry.stored_mean, entry.n) == (0.666667, 3)
    text = stored_only_warning(entry)
    assert "stored baseline 0.667 (production, current policy) on 3 samples" in text
    assert "no part in the statistics or the gate" in text
    assert "no stored score" in stored_only_warning(stored_only_entry("x", "why", [sample(9, None)]))
