"""`experiments`: the experiments recorded in the target's runs, with their outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.core.hypothesis import ExperimentResult, Hypothesis, experiment_dir


class ExperimentEntry(BaseModel):
    """One recorded experiment, as `selfimprove experiments` lists it."""

    run: str
    hypothesis: Hypothesis
    result: ExperimentResult


def list_experiments(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
                     config: Any = None) -> list[ExperimentEntry]:
    """Every experiment recorded in the target's runs (those whose stage record is in the manifest), oldest run
    first, then by id."""
    from selfimprove.config.load import load_target
    from selfimprove.store.documents import read_model
    from selfimprove.store.runs import Workspace

    cfg = config if config is not None else load_target(Path(root), target, overrides)
    out = []
    for run in Workspace(root).runs(cfg.target):
        for entry in run.manifest()["stages"]:
            if not entry["stage"].startswith("experiment."):
                continue
            folder = run.path / experiment_dir(entry["stage"].removeprefix("experiment."))
            out.append(ExperimentEntry(
                run=run.run_id, hypothesis=read_model(folder / "hypothesis.json", Hypothesis, "hypothesis",
                                                      drop=("schema",)),
                result=read_model(folder / "result.json", ExperimentResult, "experiment result", drop=("schema",))))
    return sorted(out, key=lambda e: (e.run, e.hypothesis.id))
