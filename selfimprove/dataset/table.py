"""The samples table, `dataset.parquet`: one row per Sample, the contract between snapshot, update and evaluate.

Columns: sample_id, span_id, trace_id, step, start_time, split, history (JSON list of messages), output (JSON
message or null), policy_digest, prompt_tokens, completion_tokens, latency_ms, variables (the call's template
variables as a JSON object, null when its prompt is not a template; a table written before this column reads as
null), and for each eval E:
`eval.E.label`, `eval.E.score`, `eval.E.explanation`, `eval.E.annotator_kind`. Rows are sorted by sample_id so
the table digest is stable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfimprove.core.errors import UsageError
from selfimprove.core.records import Checkpoint, EvalResult, Message, Sample

BASE_COLUMNS = ["sample_id", "span_id", "trace_id", "step", "start_time", "split", "history", "output",
                "policy_digest", "prompt_tokens", "completion_tokens", "latency_ms", "variables"]
EVAL_FIELDS = ("label", "score", "explanation", "annotator_kind")


def eval_names(columns: Iterable[str]) -> list[str]:
    """Eval names present in a samples table, in column order."""
    names: list[str] = []
    for col in columns:
        if col.startswith("eval.") and col.endswith(".score"):
            names.append(col[len("eval."):-len(".score")])
    return names


def samples_to_frame(samples: list[Sample], evals: list[str] | None = None) -> Any:
    import pandas as pd

    evals = evals if evals is not None else sorted({name for s in samples for name in s.evals})
    rows = []
    for s in sorted(samples, key=lambda s: s.sample_id):
        row: dict[str, Any] = {
            "sample_id": s.sample_id, "span_id": s.span_id, "trace_id": s.trace_id, "step": s.step,
            "start_time": s.start_time, "split": s.split,
            "history": json.dumps([m.to_openai() for m in s.history], ensure_ascii=False, sort_keys=True),
            "output": json.dumps(s.output.to_openai(), ensure_ascii=False, sort_keys=True) if s.output else None,
            "policy_digest": s.policy_digest, "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "latency_ms": s.latency_ms,
            "variables": None if s.variables is None else json.dumps(s.variables, ensure_ascii=False,
                                                                      sort_keys=True),
        }
        for name in evals:
            result = s.evals.get(name) or EvalResult()
            for f in EVAL_FIELDS:
                row[f"eval.{name}.{f}"] = getattr(result, f)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=BASE_COLUMNS + [f"eval.{n}.{f}" for n in evals for f in EVAL_FIELDS])
    for name in evals:
        frame[f"eval.{name}.score"] = frame[f"eval.{name}.score"].astype("float64")
    return frame


def write_samples(path: str | Path, batches: Iterable[list[Sample]], evals: list[str]) -> Path:
    """Write batches of Samples as the samples table (what `samples_to_frame` of them all would write: rows
    sorted by sample_id, the same columns and content digest), through an external sort: bounded memory."""
    import pyarrow as pa

    from selfimprove.store.sorted_table import SortedTable, write_table_batches
    from selfimprove.store.tables import write_table

    with SortedTable(None, ["sample_id"]) as table:
        for batch in batches:
            if batch:
                table.add(pa.Table.from_pandas(samples_to_frame(batch, evals), preserve_index=False))
        schema = table.output_schema()
        if schema is None:
            return write_table(path, samples_to_frame([], evals))
        return write_table_batches(path, schema, table.batches())


def frame_to_samples(frame: Any) -> list[Sample]:
    import pandas as pd

    evals = eval_names(frame.columns)

    def val(v: Any) -> Any:
        return None if v is None or (not isinstance(v, (str, list, dict)) and pd.isna(v)) else v

    samples = []
    for row in frame.to_dict(orient="records"):
        results = {}
        for name in evals:
            fields = {f: val(row.get(f"eval.{name}.{f}")) for f in EVAL_FIELDS}
            if any(v is not None for v in fields.values()):
                results[name] = EvalResult(**fields)
        samples.append(Sample(
            sample_id=row["sample_id"], span_id=row["span_id"], trace_id=row["trace_id"],
            step=int(val(row.get("step")) or 0), start_time=val(row.get("start_time")),
            split=row.get("split") or "unsplit",
            history=tuple(Message.model_validate(m) for m in json.loads(row["history"])),
            output=Message.model_validate(json.loads(row["output"])) if val(row.get("output")) else None,
            evals=results, policy_digest=val(row.get("policy_digest")),
            prompt_tokens=_int(val(row.get("prompt_tokens"))), completion_tokens=_int(val(row.get("completion_tokens"))),
            latency_ms=val(row.get("latency_ms")),
            variables=json.loads(row["variables"]) if val(row.get("variables")) else None,
        ))
    return samples


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def load_checkpoint(run: Any) -> Checkpoint:
    """The run's checkpoint.json (written by snapshot beside dataset.parquet); a UsageError when there is none."""
    from selfimprove.store.documents import read_model

    path = run.path / "checkpoint.json"
    if not path.is_file() and run.record("snapshot") is None:
        raise UsageError(f"no checkpoint.json in run {run.run_id}", hint="run `selfimprove snapshot` first")
    return read_model(path, Checkpoint, "checkpoint", drop=("schema",))


def read_samples(path: str | Path, split: str | None = None) -> list[Sample]:
    """Samples from a dataset.parquet, optionally only one split ("train" or "test"); read through what the table
    digest covers (an IntegrityError naming the file when it cannot be read)."""
    from selfimprove.store.documents import read_frame

    frame = read_frame(path)
    if split is not None:
        frame = frame[frame["split"] == split]
    return frame_to_samples(frame)
