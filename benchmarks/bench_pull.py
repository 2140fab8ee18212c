"""`pull` + `snapshot` of 20,000 annotated spans from a local Phoenix, against a bare `phoenix.client` fetch of the
same fields and annotations, in the same run. Targets: at most 1.25x the bare fetch, peak memory at most 1 GB.

The Phoenix database is built once (REST `log_spans`, ~130 spans/s of server ingestion, a few minutes) and cached
under `benchmarks/.cache/` (git-ignored); each run copies it to a temp dir and starts a server on it. Each side is
measured in its own child process (wall time and peak RSS of that process), alternating, best of `--repeat`.

    python benchmarks/bench_pull.py [--spans 20000] [--repeat 2] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
PROJECT = "bench-pull"
T0 = datetime(2024, 6, 1, tzinfo=UTC)
SYSTEM = ("You are Acme's customer-support assistant. Answer in at most three sentences, address the customer's "
          "order by its number, never promise refunds you cannot approve, and hand over to a human when asked.")
SELECT = ("span_id", "trace_id", "parent_id", "name", "span_kind", "start_time", "end_time", "status_code",
          "status_message", "llm.input_messages", "llm.output_messages", "llm.invocation_parameters",
          "llm.model_name", "llm.token_count.prompt", "llm.token_count.completion", "llm.prompt_template",
          "metadata", "llm.tools")


def _spans(n: int) -> list[dict]:
    from selfimprove.sim import generate_inputs

    inputs = generate_inputs("support", n, seed=42)
    out = []
    for i, msgs in enumerate(inputs):
        t0 = T0 + timedelta(seconds=i)
        question = msgs[-1]["content"]
        answer = f"Thanks for reaching out about case {i}. " + question[::-1][:160]
        out.append({
            "name": "ChatCompletion", "span_kind": "LLM", "status_code": "OK", "status_message": "",
            "context": {"trace_id": uuid.UUID(int=i + 1).hex, "span_id": f"{i + 1:016x}"},
            "start_time": t0.isoformat(), "end_time": (t0 + timedelta(milliseconds=400)).isoformat(),
            "attributes": {
                "openinference.span.kind": "LLM", "llm.model_name": "sim-small", "llm.system": "openai",
                "llm.invocation_parameters": json.dumps({"model": "sim-small", "temperature": 0.2}),
                "llm.input_messages": [{"message.role": "system", "message.content": SYSTEM},
                                       {"message.role": "user", "message.content": question}],
                "llm.output_messages": [{"message.role": "assistant", "message.content": answer}],
                "llm.token_count.prompt": 60 + len(question) // 4, "llm.token_count.completion": 40,
            }})
    return out


def build_cache(workdir: Path, n: int) -> None:
    """A Phoenix working dir whose sqlite holds `n` LLM spans, each with one annotation carrying an eval spec."""
    import pandas as pd
    from phoenix.client import Client
    from phoenix.client.types.spans import SpanQuery

    from selfimprove.sim.traffic import SPEC_KEY, eval_specs
    from selfimprove.telemetry.phoenix_server import start_phoenix

    shutil.rmtree(workdir, ignore_errors=True)
    started = time.monotonic()
    server = start_phoenix(workdir=workdir, timeout=180)
    try:
        client = Client(base_url=server.url)
        spans = _spans(n)
        for i in range(0, n, 2000):
            client.spans.log_spans(project_identifier=PROJECT, spans=spans[i:i + 2000], timeout=300)
        while True:
            seen = len(client.spans.get_spans_dataframe(project_identifier=PROJECT, query=SpanQuery().select(
                "span_id"), limit=n + 10, timeout=300))
            print(f"  ingested {seen}/{n} spans ({time.monotonic() - started:.0f} s)", flush=True)
            if seen >= n:
                break
            time.sleep(10)
        spec = next(s for s in eval_specs("support") if s["name"] == "policy_compliance")
        rows = [{"span_id": s["context"]["span_id"], "annotation_name": "policy_compliance",
                 "annotator_kind": "LLM", "label": "compliant" if i % 3 else "non_compliant",
                 "score": float(bool(i % 3)), "explanation": f"The reply {'keeps' if i % 3 else 'breaks'} rule {i % 7}.",
                 "metadata": {"model": "sim-judge", SPEC_KEY: spec}} for i, s in enumerate(spans)]
        for i in range(0, n, 2000):
            client.spans.log_span_annotations_dataframe(dataframe=pd.DataFrame(rows[i:i + 2000]), sync=True)
        print(f"  annotated {n} spans ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        server.stop()
    (workdir / "ready.json").write_text(json.dumps({"spans": n, "annotations": n, "project": PROJECT}))


# Each child starts its clock before its first import: the bare script pays for importing phoenix.client and
# pandas as `selfimprove pull` does (both are imported lazily inside the stages, inside the timed region).
BARE = """
import time
t = time.perf_counter()
import json, resource, sys
from datetime import datetime, timezone
from phoenix.client import Client
from phoenix.client.types.spans import SpanQuery
url, n = sys.argv[1], int(sys.argv[2])
client = Client(base_url=url)
query = SpanQuery().where("span_kind == 'LLM'").select(*{select})
spans = client.spans.get_spans_dataframe(project_identifier={project!r}, query=query, limit=n + 1000,
    start_time=datetime(2024, 1, 1, tzinfo=timezone.utc), timeout=600)
ids = list(spans.index)
frames = [client.spans.get_span_annotations_dataframe(span_ids=ids[i:i + 1000], project_identifier={project!r},
          exclude_annotation_names=[], limit=1000, timeout=600) for i in range(0, len(ids), 1000)]
rows = sum(len(f) for f in frames)
print(json.dumps({{"seconds": time.perf_counter() - t, "spans": len(spans), "annotations": rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

OURS = """
import time
t = time.perf_counter()
import json, resource, sys
from pathlib import Path
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot
root = Path(sys.argv[1])
p = pull(root=root, since="2024-01-01T00:00Z")
t_pull = time.perf_counter() - t
s = snapshot(root=root, run=p.run)
assert not s.reused
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t, "pull_seconds": t_pull, "spans": p.spans,
                  "annotations": p.annotations, "samples": s.counts["samples"], "run_path": p.run_path,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    from selfimprove.telemetry.phoenix_server import start_phoenix

    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    cached = CACHE / f"phoenix-{args.spans}"
    if args.rebuild or not (cached / "ready.json").is_file():
        print(f"building the Phoenix database with {args.spans} spans in {cached} (once)", flush=True)
        build_cache(cached, args.spans)
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        workdir = Path(tmp) / "phoenix"
        shutil.copytree(cached, workdir, ignore=shutil.ignore_patterns("phoenix.log"))
        server = start_phoenix(workdir=workdir, timeout=180)
        try:
            bare_code = BARE.format(select=SELECT, project=PROJECT)
            bare, ours = [], []
            for i in range(args.repeat):
                root = Path(tmp) / f"ws{i}"  # a fresh workspace: nothing reused from an earlier repetition
                (root / "configs").mkdir(parents=True)
                (root / "configs" / "bench.toml").write_text(textwrap.dedent(f"""\
                    target = "bench"
                    [telemetry.phoenix]
                    endpoint = "{server.url}"
                    project = "{PROJECT}"
                    """))
                bare.append(_child(bare_code, server.url, str(args.spans)))
                ours.append(_child(OURS, str(root)))
        finally:
            server.stop()
    b = min(bare, key=lambda r: r["seconds"])
    o = min(ours, key=lambda r: r["seconds"])
    assert b["spans"] == o["spans"] == args.spans and b["annotations"] == o["annotations"] == args.spans, (b, o)
    ratio = o["seconds"] / b["seconds"]
    peak = max(r["peak_mb"] for r in ours)
    print(f"bare client fetch : {b['seconds']:.2f} s  ({b['spans']} spans, {b['annotations']} annotations, "
          f"peak {b['peak_mb']:.0f} MB)")
    print(f"pull + snapshot   : {o['seconds']:.2f} s  (pull {o['pull_seconds']:.2f} s; {o['samples']} samples; "
          f"peak {peak:.0f} MB)")
    ok = ratio <= 1.25 and peak <= 1024
    runs = {name: ", ".join(f"{r['seconds']:.2f}" for r in rs) for name, rs in (("bare", bare), ("ours", ours))}
    print(f"ratio {ratio:.2f}x (target <= 1.25x), peak memory {peak:.0f} MB (target <= 1024 MB): "
          f"{'OK' if ok else 'MISSED'}  [best of {args.repeat}; all runs: bare {runs['bare']} s, "
          f"ours {runs['ours']} s]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
