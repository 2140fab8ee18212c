"""Held-out results in Phoenix: the samples as a Phoenix dataset, each replayed arm as a Phoenix experiment.

Uses the phoenix-client datasets and experiments APIs (`datasets.create_dataset` with examples that keep their
span ids, `experiments.create`, `log_run`, `log_evaluation`, `list`, `get_experiment`) and the server's
experiment tags route (`POST v1/experiments/{id}/tags`, name `baseline`, which the client does not wrap) to mark
the control arm as the dataset's baseline.

Idempotent: the dataset's name carries a digest of its content, so the same samples find the same dataset; an
arm's experiment is found by the `selfimprove` key of its metadata (the experiment id and the arm), and only the
runs it lacks are logged (a run's evaluations are upserted by name, so re-posting one is harmless). Nothing here
decides anything: Phoenix is a view of results that are already in the run folder.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.core.canonical import digest, short
from selfimprove.core.records import Sample

BASELINE_TAG = "baseline"


@dataclass(frozen=True)
class ArmRecord:
    """One arm to record: its experiment name, the label of its rows, its metadata and whether it is the
    baseline (the control)."""

    name: str
    label: str
    metadata: dict[str, Any]
    baseline: bool = False


@dataclass
class Published:
    dataset_id: str
    dataset_name: str
    dataset_url: str
    examples: int
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm name -> {id, url, runs_logged}


def dataset_name(target: str, split: str, samples: Sequence[Sample]) -> str:
    """`selfimprove.<target>.<split>.<12 hex>`: the digest of the samples' ids, inputs and production outputs."""
    key = [(s.sample_id, s.span_id, [m.to_openai() for m in s.history], s.output.to_openai() if s.output else None)
           for s in samples]
    return f"selfimprove.{target}.{split}.{short(digest(key))}"


def example_of(sample: Sample) -> dict[str, Any]:
    """A dataset example: the call's messages and variables in, the production output out, the sample's ids and
    production verdicts as metadata, linked to its span."""
    return {"input": {"messages": [m.to_openai() for m in sample.history], "variables": sample.variables or {}},
            "output": {"output": sample.output.output_text() if sample.output else None},
            "metadata": {"sample_id": sample.sample_id, "trace_id": sample.trace_id,
                         "production": {k: v.model_dump(exclude_none=True) for k, v in sorted(sample.evals.items())}},
            "span_id": sample.span_id}


def ensure_dataset(client: Any, name: str, samples: Sequence[Sample], description: str,
                   timeout: int = 60) -> tuple[Any, dict[str, str]]:
    """(dataset, {sample_id: example id}): the dataset named `name`, created from `samples` when absent."""
    try:
        dataset = client.datasets.get_dataset(dataset=name, timeout=timeout)
    except ValueError:  # "Dataset not found"
        dataset = client.datasets.create_dataset(name=name, examples=[example_of(s) for s in samples],
                                                 dataset_description=description, timeout=timeout)
    ids = {(ex.get("metadata") or {}).get("sample_id"): ex["id"] for ex in dataset.examples}
    missing = [s.sample_id for s in samples if s.sample_id not in ids]
    if missing:
        raise ValueError(f"Phoenix dataset {name} lacks {len(missing)} of the samples (e.g. {missing[0]})")
    return dataset, ids


def _find_experiment(client: Any, dataset_id: str, key: dict[str, Any], timeout: int) -> dict[str, Any] | None:
    for exp in client.experiments.list(dataset_id=dataset_id, timeout=timeout):
        if (exp.get("metadata") or {}).get("selfimprove") == key:
            return exp
    return None


def record_arm(client: Any, dataset: Any, example_ids: dict[str, str], arm: ArmRecord,
               rows: Sequence[dict[str, Any]], evals: dict[str, str], timeout: int = 60) -> dict[str, Any]:
    """The arm's experiment on `dataset` (created when absent) with one run per sample it was scored on and each
    eval's verdict on the run; `evals` maps eval name -> annotator kind (LLM, CODE, HUMAN). Returns
    {id, url, runs_logged}."""
    key = arm.metadata["selfimprove"]
    exp = _find_experiment(client, dataset.id, key, timeout)
    if exp is None:
        exp = client.experiments.create(dataset_id=dataset.id, dataset_version_id=dataset.version_id,
                                        experiment_name=arm.name, experiment_metadata=arm.metadata, timeout=timeout)
    done: dict[str, str] = {}
    if exp.get("successful_run_count", 0) or exp.get("failed_run_count", 0):
        ran = client.experiments.get_experiment(experiment_id=exp["id"])
        done = {r["dataset_example_id"]: r["id"] for r in ran["task_runs"]}
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["policy"] == arm.label:
            by_sample.setdefault(r["sample_id"], []).append(r)
    logged = 0
    now = dt.datetime.now(dt.UTC)
    for sid, verdicts in sorted(by_sample.items()):
        example = example_ids[sid]
        if example in done:
            continue
        first = verdicts[0]
        latency = dt.timedelta(milliseconds=_number(first.get("gen_latency_ms")) or 0.0)
        run = client.experiments.log_run(experiment_id=exp["id"], dataset_example_id=example,
                                         output={"output": first.get("output")}, start_time=now,
                                         end_time=now + latency, error=first.get("gen_error") or None,
                                         timeout=timeout)
        logged += 1
        for v in verdicts:
            if v.get("score") is None and v.get("label") is None and not v.get("error"):
                continue
            client.experiments.log_evaluation(
                experiment_run_id=run["id"], name=v["eval"], annotator_kind=evals.get(v["eval"], "LLM"),
                score=_number(v.get("score")), label=v.get("label") or None,
                explanation=v.get("explanation") or None, error=None if v.get("score") is not None or
                v.get("label") else (v.get("error") or None), timeout=timeout)
    if arm.baseline:
        response = client._client.post(f"v1/experiments/{exp['id']}/tags", json={"name": BASELINE_TAG},
                                       timeout=timeout)  # the client has no wrapper for tags (phoenix-client 3.5)
        response.raise_for_status()
    return {"id": exp["id"], "url": client.experiments.get_experiment_url(dataset.id, exp["id"]),
            "runs_logged": logged}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value  # NaN (a missing score in a frame) is no score


def publish(client: Any, *, target: str, split: str, samples: Sequence[Sample], rows: Sequence[dict[str, Any]],
            arms: Sequence[ArmRecord], evals: dict[str, str], description: str = "",
            timeout: int = 60) -> Published:
    """The dataset of `samples` and one experiment per arm (see the module docstring)."""
    name = dataset_name(target, split, samples)
    dataset, ids = ensure_dataset(client, name, samples, description or f"selfimprove {target}: {split} split",
                                  timeout)
    out = Published(dataset_id=dataset.id, dataset_name=name, examples=len(ids),
                    dataset_url=str(client._client.base_url).rstrip("/") + f"/datasets/{dataset.id}/examples")
    for arm in arms:
        out.experiments[arm.name] = record_arm(client, dataset, ids, arm, rows, evals, timeout)
    return out
