"""Held-out results in a real Phoenix: the dataset keeps span ids, each arm is an experiment with runs and
evaluations, the control is the dataset's baseline, and a second publish duplicates nothing."""

import pytest

from selfimprove.core.records import EvalResult, Message, Sample
from selfimprove.telemetry.phoenix_experiments import ArmRecord, dataset_name, publish

pytestmark = pytest.mark.phoenix


def samples(n=6):
    return [Sample(sample_id=f"s{i}", span_id=f"{i:016x}", trace_id=f"{i:032x}", split="test",
                   history=(Message(role="user", content=f"order #1234{i} is late"),),
                   output=Message(role="assistant", content=f"sorry {i}"),
                   evals={"policy": EvalResult(label="compliant", score=1.0)}) for i in range(n)]


def rows(label, score, ids):
    return [{"sample_id": sid, "policy": label, "eval": name, "label": lab, "score": sc, "explanation": "because",
             "error": None, "output": f"{label} says {sid}", "gen_error": None, "gen_latency_ms": 12.0}
            for sid in ids for name, lab, sc in (("policy", "ok" if score else "bad", score), ("tone", "fine", 1.0))]


def test_publish_records_dataset_and_both_arms_once(phoenix, project_name):
    from phoenix.client import Client

    client = Client(base_url=phoenix.url)
    ss = samples()
    ids = [s.sample_id for s in ss]
    key = {"experiment": project_name}
    arms = [ArmRecord(name=f"{project_name} control", label="baseline", baseline=True,
                      metadata={"selfimprove": {**key, "arm": "control"}}),
            ArmRecord(name=f"{project_name} test", label="t", metadata={"selfimprove": {**key, "arm": "test"}})]
    data = rows("baseline", 0.0, ids) + rows("t", 1.0, ids[:4])  # the test arm stopped early: 4 samples
    out = publish(client, target=project_name, split="test", samples=ss, rows=data, arms=arms,
                  evals={"policy": "LLM", "tone": "CODE"})
    assert out.dataset_name == dataset_name(project_name, "test", ss) and out.examples == 6
    ds = client.datasets.get_dataset(dataset=out.dataset_id)
    assert sorted(ex["metadata"]["sample_id"] for ex in ds.examples) == ids
    assert ds.examples[0]["input"]["messages"][0]["role"] == "user"
    exps = {e["name"]: e for e in client.experiments.list(dataset_id=out.dataset_id)}
    assert set(exps) == {a.name for a in arms}
    assert exps[arms[0].name]["successful_run_count"] == 6 and exps[arms[1].name]["successful_run_count"] == 4
    test_run = client.experiments.get_experiment(experiment_id=out.experiments[arms[1].name]["id"])
    scores = sorted((e.name, e.result["score"]) for e in test_run["evaluation_runs"])
    assert scores == [("policy", 1.0)] * 4 + [("tone", 1.0)] * 4
    tags = client._client.get(f"v1/experiments/{out.experiments[arms[0].name]['id']}/tags").json()["data"]
    assert [t["name"] for t in tags] == ["baseline"]
    assert out.experiments[arms[1].name]["url"].startswith(phoenix.url)
    # again: the same dataset and experiments, no run logged twice
    again = publish(client, target=project_name, split="test", samples=ss, rows=data, arms=arms,
                    evals={"policy": "LLM", "tone": "CODE"})
    assert again.dataset_id == out.dataset_id
    assert {a["id"] for a in again.experiments.values()} == {a["id"] for a in out.experiments.values()}
    assert all(a["runs_logged"] == 0 for a in again.experiments.values())
    assert len(client.experiments.list(dataset_id=out.dataset_id)) == 2
