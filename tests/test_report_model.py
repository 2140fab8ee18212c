"""The report document: its published JSON schema equals the model's, and the model refuses what it does not know."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from selfimprove.core.report import Report, report_filename
from selfimprove.schemas import documents, schema_text

DOCS = Path(__file__).resolve().parent.parent / "docs"

MINIMAL = {
    "schema": "selfimprove.report/2", "target": "support", "run": "r1", "split": "test", "n_samples": 3,
    "inputs": {"dataset": "sha256:" + "a" * 64, "checkpoint": "sha256:" + "b" * 64}, "primary_eval": "policy",
    "baseline": {"policy_digest": "sha256:" + "c" * 64, "mode": "replay"},
    "candidates": [{"id": "c-1", "policy_digest": "sha256:" + "d" * 64, "candidate_digest": "sha256:" + "e" * 64,
                    "passed_guards": True, "n_samples": 3,
                    "evals": {"policy": {"diff": 0.1, "ci": [0.0, 0.2], "n": 3, "wins": 2, "ties": 1, "losses": 0,
                                         "sprt": {"decision": "continue", "n_used": 3}}}}],
    "settings": {"alpha": 0.05, "beta": 0.2, "min_effect": 0.05, "seed": 0},
}


@pytest.mark.parametrize("name", sorted(documents()))
def test_the_committed_schema_is_the_models(name):
    committed = (DOCS / "schemas" / name).read_text(encoding="utf-8")
    assert committed == schema_text(documents()[name]), (
        f"docs/schemas/{name} is stale: regenerate it with `python -m selfimprove.schemas`")


def test_a_report_round_trips_through_its_document_with_the_schema_field():
    report = Report.model_validate(MINIMAL)
    doc = report.document()
    assert doc["schema"] == "selfimprove.report/2" and "schema_" not in doc
    assert doc["candidates"][0]["evals"]["policy"]["ci"] == [0.0, 0.2]
    assert Report.model_validate(json.loads(json.dumps(doc))) == report
    assert report.held_out and report.entry("c-1").candidate_digest.endswith("e" * 64)
    assert report.entry("nope") is None


@pytest.mark.parametrize("change", [
    {"split": "validation"},                      # not a split
    {"schema": "selfimprove.report/1"},           # an older document
    {"unknown_field": 1},                         # a typo or a stale writer
    {"candidates": [{**MINIMAL["candidates"][0], "candidate_digest": None}]},  # the candidate's digest is required
])
def test_the_model_refuses_what_it_does_not_know(change):
    with pytest.raises(ValidationError):
        Report.model_validate({**MINIMAL, **change})


def test_evidence_from_another_split_has_its_own_file_names():
    assert report_filename("test") == "report.json"
    assert report_filename("train") == "report.train.json"
    assert report_filename("train", "results", ".parquet") == "results.train.parquet"
    assert not Report.model_validate({**MINIMAL, "split": "train"}).held_out
