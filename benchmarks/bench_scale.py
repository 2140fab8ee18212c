"""`pull` + `snapshot` at growing scale: wall time and peak RSS at 20k, 100k and 500k annotated LLM spans.

The larger sizes read a spans file (the file source: a parquet file shaped like Phoenix's default spans frame, with
a sibling annotations file, each span judged once with an eval spec in the annotation's metadata); 20k is also
pulled from a local Phoenix (the database `bench_pull.py` builds and caches). Each measurement runs in its own
child process (wall time and `ru_maxrss` of that process, imports included). Targets: time linear in the spans
(500k / 100k within 5.5 x), peak RSS at 500k at most 1.5 GB.

The spans files are generated once, in row groups (the generator's memory stays small), and cached under
`benchmarks/.cache/scale-<n>/` (git-ignored).

    nice -n 10 python benchmarks/bench_scale.py [--sizes 20000,100000,500000] [--no-phoenix] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_pull import OURS, PROJECT, _child, build_cache

CACHE = HERE / ".cache"
T0 = datetime(2024, 6, 1, tzinfo=UTC)
SYSTEM = ("You are Acme's customer-support assistant. Answer in at most three sentences, address the customer's "
          "order by its number, never promise refunds you cannot approve, and hand over to a human when asked.")
ROW_GROUP = 20_000
MAX_TIME_RATIO = 5.5
MAX_PEAK_MB = 1536


def write_spans_file(folder: Path, n: int) -> Path:
    """`spans.parquet` + `spans.annotations.parquet` with `n` LLM spans (one trace each, one second apart, every
    input distinct) and one `policy_compliance` annotation per span, written `ROW_GROUP` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selfimprove.sim import generate_inputs
    from selfimprove.sim.traffic import SPEC_KEY, eval_specs

    folder.mkdir(parents=True, exist_ok=True)
    questions = [msgs[-1]["content"] for msgs in generate_inputs("support", 2000, seed=42)]
    spec = next(s for s in eval_specs("support") if s["name"] == "policy_compliance")
    params = json.dumps({"model": "sim-small", "temperature": 0.2})
    spans_writer = annotations_writer = None
    try:
        for lo in range(0, n, ROW_GROUP):
            ids = range(lo, min(n, lo + ROW_GROUP))
            starts = [T0 + timedelta(seconds=i) for i in ids]
            asked = [f"[case {i}] {questions[i % len(questions)]}" for i in ids]
            spans = pa.table({
                "context.span_id": [f"{i + 1:016x}" for i in ids],
                "context.trace_id": [f"{i + 1:032x}" for i in ids],
                "parent_id": pa.nulls(len(ids), pa.string()),
                "name": ["ChatCompletion"] * len(ids), "span_kind": ["LLM"] * len(ids),
                "start_time": pa.array(starts, pa.timestamp("us", tz="UTC")),
                "end_time": pa.array([t + timedelta(milliseconds=400) for t in starts], pa.timestamp("us", tz="UTC")),
                "status_code": ["OK"] * len(ids), "status_message": [""] * len(ids),
                "attributes.llm.input_messages": [json.dumps([
                    {"message.role": "system", "message.content": SYSTEM},
                    {"message.role": "user", "message.content": q}]) for q in asked],
                "attributes.llm.output_messages": [json.dumps([
                    {"message.role": "assistant", "message.content": f"Thanks for reaching out about case {i}. "
                     + q[::-1][:160]}]) for i, q in zip(ids, asked)],
                "attributes.llm.invocation_parameters": [params] * len(ids),
                "attributes.llm.model_name": ["sim-small"] * len(ids),
                "attributes.llm.token_count.prompt": [60 + len(q) // 4 for q in asked],
                "attributes.llm.token_count.completion": [40] * len(ids),
            })
            annotations = pa.table({
                "span_id": [f"{i + 1:016x}" for i in ids],
                "annotation_name": ["policy_compliance"] * len(ids), "annotator_kind": ["LLM"] * len(ids),
                "label": ["compliant" if i % 3 else "non_compliant" for i in ids],
                "score": [float(bool(i % 3)) for i in ids],
                "explanation": [f"The reply {'keeps' if i % 3 else 'breaks'} rule {i % 7}." for i in ids],
                "metadata": [json.dumps({"model": "sim-judge", SPEC_KEY: spec})] * len(ids),
                "identifier": [""] * len(ids),
                "created_at": pa.array([t + timedelta(seconds=5) for t in starts], pa.timestamp("us", tz="UTC")),
                "updated_at": pa.array([t + timedelta(seconds=5) for t in starts], pa.timestamp("us", tz="UTC")),
            })
            if spans_writer is None:
                spans_writer = pq.ParquetWriter(folder / "spans.parquet", spans.schema, compression="zstd")
                annotations_writer = pq.ParquetWriter(folder / "spans.annotations.parquet", annotations.schema,
                                                      compression="zstd")
            spans_writer.write_table(spans)
            annotations_writer.write_table(annotations)
    finally:
        for writer in (spans_writer, annotations_writer):
            if writer is not None:
                writer.close()
    (folder / "ready.json").write_text(json.dumps({"spans": n}))
    return folder / "spans.parquet"


def measure(workspace: Path, config: str) -> dict:
    (workspace / "configs").mkdir(parents=True)
    (workspace / "configs" / "bench.toml").write_text(textwrap.dedent(config))
    return _child(OURS, str(workspace))  # pull + snapshot in one child process, clock started before imports


def digests(run_path: str) -> dict[str, str]:
    """The content digests the pull and snapshot stages recorded (to compare two builds of the same data)."""
    run = Path(run_path)
    manifest = json.loads((run / "manifest.json").read_text())
    records = [json.loads((run / entry["record"]).read_text()) for entry in manifest["stages"]]
    return {o["path"]: o["digest"] for record in records for o in record["outputs"]}


def file_size(n: int, rebuild: bool) -> Path:
    folder = CACHE / f"scale-{n}"
    if rebuild or not (folder / "ready.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"writing {n} spans to {folder} (once)", flush=True)
        write_spans_file(folder, n)
    return folder / "spans.parquet"


def phoenix_20k(tmp: Path) -> dict:
    from selfimprove.telemetry.phoenix_server import start_phoenix

    cached = CACHE / "phoenix-20000"
    if not (cached / "ready.json").is_file():
        print(f"building the Phoenix database with 20000 spans in {cached} (once, a few minutes)", flush=True)
        build_cache(cached, 20_000)
    workdir = tmp / "phoenix"
    shutil.copytree(cached, workdir, ignore=shutil.ignore_patterns("phoenix.log"))
    with start_phoenix(workdir=workdir, timeout=180) as server:
        return measure(tmp / "ws-phoenix", f"""\
            target = "bench"
            [telemetry.phoenix]
            endpoint = "{server.url}"
            project = "{PROJECT}"
            """)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,100000,500000", help="comma-separated span counts (file source)")
    ap.add_argument("--no-phoenix", action="store_true", help="skip the 20k pull from a local Phoenix")
    ap.add_argument("--rebuild", action="store_true", help="write the cached spans files again")
    ap.add_argument("--digests", type=Path, help="write each size's artifact digests to this JSON file (to compare "
                    "two versions of the code on the same data)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in sizes:
            path = file_size(n, args.rebuild)
            r = measure(Path(tmp) / f"ws-{n}", f"""\
                target = "bench"
                [telemetry]
                source = "file"
                [telemetry.file]
                path = "{path}"
                """)
            assert r["spans"] == r["annotations"] == n, r
            results[n] = {**r, "digests": digests(r["run_path"])}
            print(f"file    {n:>7} spans: {r['seconds']:7.2f} s (pull {r['pull_seconds']:.2f} s, CPU {r['cpu_seconds']:.1f} s), "
                  f"peak {r['peak_mb']:6.0f} MB, {r['samples']} samples  [load {os.getloadavg()[0]:.1f}]",
                  flush=True)
        if not args.no_phoenix:
            r = phoenix_20k(Path(tmp))
            print(f"phoenix {20_000:>7} spans: {r['seconds']:7.2f} s (pull {r['pull_seconds']:.2f} s, CPU {r['cpu_seconds']:.1f} s), "
                  f"peak {r['peak_mb']:6.0f} MB, {r['samples']} samples  [load {os.getloadavg()[0]:.1f}]",
                  flush=True)
    if args.digests:
        args.digests.write_text(json.dumps({n: r["digests"] for n, r in results.items()}, indent=1, sort_keys=True))
    ok = True
    if 100_000 in results and 500_000 in results:
        ratio = results[500_000]["seconds"] / results[100_000]["seconds"]
        met = ratio <= MAX_TIME_RATIO
        ok &= met
        cpu = results[500_000]["cpu_seconds"] / results[100_000]["cpu_seconds"]
        print(f"time 500k / 100k: {ratio:.2f} x wall, {cpu:.2f} x CPU (target <= {MAX_TIME_RATIO} x wall): "
              f"{'OK' if met else 'MISSED'}")
    if 500_000 in results:
        peak = results[500_000]["peak_mb"]
        met = peak <= MAX_PEAK_MB
        ok &= met
        print(f"peak RSS at 500k: {peak:.0f} MB (target <= {MAX_PEAK_MB} MB): {'OK' if met else 'MISSED'}")
    if len(results) > 1:
        lo, hi = min(results), max(results)
        print(f"peak RSS {hi // 1000}k / {lo // 1000}k: {results[hi]['peak_mb'] / results[lo]['peak_mb']:.2f} x "
              f"for {hi / lo:.0f} x the spans")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
