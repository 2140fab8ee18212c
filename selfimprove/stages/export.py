"""`export`: what a run learned, in files other tools read.

Kinds:
- `dataset`: the run's samples (dataset.parquet: ids, split, messages and output as JSON, each eval's label,
  score and explanation), optionally one split;
- `results`: the replayed rows of evaluate (results.parquet) or of an experiment (`experiment=<id>`);
- `sft`: supervised fine-tuning examples in the OpenAI chat format (JSONL), from the best-scoring samples: the
  production calls (`source=production`: the messages production sent, its answer) and/or the replayed answers
  (`source=replayed`: the messages the replaying policy sends, its answer) whose primary eval's normalised score is
  at least `min_score`;
- `preferences`: OpenAI preference pairs (JSONL) from the paired held-out results: for each sample where the
  baseline's and a candidate's primary scores differ, the better answer preferred, both after the same input (the
  baseline's messages: the prompt the model runs with, so the pair teaches it the better answer).
`dataset` and `results` are written as CSV (nested values as JSON text), JSONL or parquet (by `format` or the
file's suffix); `sft` and `preferences` only as JSONL. The file is written atomically; the run is only read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError

FORMATS = ("csv", "jsonl", "parquet")


class ExportOptions(BaseModel):
    kind: Literal["dataset", "results", "sft", "preferences"]
    out: Path
    format: Literal["csv", "jsonl", "parquet"] | None = None
    experiment: str | None = None
    split: Literal["train", "test", "all"] = "all"
    source: Literal["production", "replayed", "both"] = "production"
    min_score: float = Field(1.0, ge=0, le=1)


class ExportResult(BaseModel):
    target: str
    run: str
    kind: str
    format: str
    path: str
    rows: int
    skipped: dict[str, int] = Field(default_factory=dict)


def export(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
           run: str | None = None, options: ExportOptions, config: Any = None) -> ExportResult:
    from selfimprove.config.load import load_target
    from selfimprove.store.runs import Workspace

    cfg = config if config is not None else load_target(Path(root), target, overrides)
    fmt = options.format or options.out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the format of {options.out}", hint="pass --format csv, jsonl or parquet")
    if options.kind in ("sft", "preferences") and fmt != "jsonl":
        raise UsageError(f"{options.kind} is written as JSONL (the OpenAI fine-tuning format), not {fmt}",
                         hint="name the file .jsonl or pass --format jsonl")
    the_run = Workspace(root).open_run(cfg.target, run)
    skipped: dict[str, int] = {}
    if options.kind in ("dataset", "results"):
        frame = _table(the_run, options)
        _write_frame(frame, options.out, fmt)
        rows = len(frame)
    else:
        records = (_sft(cfg, the_run, options, skipped) if options.kind == "sft"
                   else _preferences(cfg, the_run, options, skipped))
        _write_jsonl(records, options.out)
        rows = len(records)
    return ExportResult(target=cfg.target, run=the_run.run_id, kind=options.kind, format=fmt, path=str(options.out),
                        rows=rows, skipped=skipped)


def _results_path(run: Any, experiment: str | None) -> Path:
    from selfimprove.core.hypothesis import experiment_dir

    path = run.path / (f"{experiment_dir(experiment)}/results.parquet" if experiment else "results.parquet")
    if not path.is_file():
        raise UsageError(f"no results in run {run.run_id}" + (f" for experiment {experiment}" if experiment else ""),
                         hint="run `selfimprove evaluate` (or `selfimprove experiment`) first")
    return path


def _table(run: Any, options: ExportOptions) -> Any:
    from selfimprove.store.documents import read_frame

    if options.kind == "results":
        return read_frame(_results_path(run, options.experiment))
    frame = read_frame(run.path / "dataset.parquet")
    return frame if options.split == "all" else frame[frame["split"] == options.split].reset_index(drop=True)


def _write_frame(frame: Any, out: Path, fmt: str) -> None:
    import io

    from selfimprove.store import atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        atomic.write_atomic(out, lambda tmp: frame.to_parquet(tmp, index=False))
    elif fmt == "csv":
        plain = frame.copy()
        for col in plain.columns:
            if plain[col].map(lambda v: isinstance(v, (list, dict))).any():
                plain[col] = plain[col].map(lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
                                            if isinstance(v, (list, dict)) else v)
        buf = io.StringIO()
        plain.to_csv(buf, index=False)
        atomic.write_text(out, buf.getvalue())
    else:
        atomic.write_text(out, frame.to_json(orient="records", lines=True, force_ascii=False))


def _write_jsonl(records: list[dict[str, Any]], out: Path) -> None:
    from selfimprove.store import atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records))


def _context(cfg: Any, run: Any, options: ExportOptions) -> tuple[Any, Any, dict[str, Any]]:
    """(samples by id, primary eval spec, policy by result label) for the run (and experiment)."""
    from selfimprove.core.hypothesis import experiment_dir
    from selfimprove.core.records import Candidate, Policy
    from selfimprove.dataset.table import load_checkpoint, read_samples
    from selfimprove.evaluation import inputs
    from selfimprove.store.documents import read_json, read_model

    checkpoint = load_checkpoint(run)
    primary = inputs.primary_eval(cfg, checkpoint, inputs.included_evals(cfg, checkpoint))
    samples = {s.sample_id: s for s in read_samples(run.path / "dataset.parquet")
               if options.split == "all" or s.split == options.split}
    policies: dict[str, Any] = {"baseline": checkpoint.policy}
    if options.experiment:
        folder = run.path / experiment_dir(options.experiment)
        policies["baseline"] = Policy.model_validate({k: v for k, v in read_json(folder / "control.json").items()
                                                      if k != "schema"})
        cand = read_model(folder / "candidate.json", Candidate, "candidate", drop=("schema",))
        policies[cand.id] = cand.policy
    else:
        for path in sorted((run.path / "candidates").glob("*.json")):
            cand = read_model(path, Candidate, "candidate", drop=("schema",))
            policies[cand.id] = cand.policy
    return samples, primary, policies


def _sft(cfg: Any, run: Any, options: ExportOptions, skipped: dict[str, int]) -> list[dict[str, Any]]:
    from selfimprove.core.finetune import production_messages, replay_messages, sft_example
    from selfimprove.core.records import Message
    from selfimprove.core.scores import normalize

    samples, primary, policies = _context(cfg, run, options)
    out = []
    if options.source in ("production", "both"):
        for sid in sorted(samples):
            s = samples[sid]
            verdict = s.evals.get(primary.name)
            score = normalize(verdict.score if verdict else None, primary)
            if s.output is None or score is None or score < options.min_score:
                skipped["production below min_score or unscored"] = skipped.get(
                    "production below min_score or unscored", 0) + 1
                continue
            out.append(sft_example(production_messages(s), s.output, policies["baseline"]))
    if options.source in ("replayed", "both"):
        for row in _primary_rows(run, options, primary):
            s, policy = samples.get(row["sample_id"]), policies.get(row["policy"])
            score = normalize(row["score"], primary)
            if s is None or policy is None or not row["output"] or score is None or score < options.min_score:
                skipped["replayed below min_score, failed or unknown"] = skipped.get(
                    "replayed below min_score, failed or unknown", 0) + 1
                continue
            out.append(sft_example(replay_messages(policy, s), Message(role="assistant", content=row["output"]),
                                   policy))
    return out


def _primary_rows(run: Any, options: ExportOptions, primary: Any) -> list[dict[str, Any]]:
    from selfimprove.store.documents import read_rows

    rows = read_rows(_results_path(run, options.experiment))
    return [r for r in rows if r["eval"] == primary.name and not r.get("gen_error")]


def _preferences(cfg: Any, run: Any, options: ExportOptions, skipped: dict[str, int]) -> list[dict[str, Any]]:
    from selfimprove.core.finetune import preference_pair, replay_messages
    from selfimprove.core.scores import normalize

    samples, primary, policies = _context(cfg, run, options)
    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for r in _primary_rows(run, options, primary):
        by_sample.setdefault(r["sample_id"], {})[r["policy"]] = r
    out = []
    for sid, arms in sorted(by_sample.items()):
        base, s = arms.get("baseline"), samples.get(sid)
        if base is None or s is None:
            continue
        for label, row in sorted(arms.items()):
            if label == "baseline":
                continue
            b, c = normalize(base["score"], primary), normalize(row["score"], primary)
            if b is None or c is None or b == c or not base["output"] or not row["output"] \
                    or base["output"] == row["output"]:
                skipped["pairs with equal or missing scores"] = skipped.get("pairs with equal or missing scores", 0) + 1
                continue
            better, worse = (row, base) if c > b else (base, row)
            out.append(preference_pair(replay_messages(policies["baseline"], s), better["output"], worse["output"]))
    return out
