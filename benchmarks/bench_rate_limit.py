"""evaluate under a provider rate limit: rows must not fail for 429s alone, and the wall time should stay near what
the limit allows.

The simulator answers 429 (with Retry-After) above `--rate` requests per second (a token bucket of `--rate`).
`evaluate` replays `--samples` held-out samples for one candidate and the baseline (generation + 3 judgements each,
so 8 calls a sample) at concurrency 16. Targets: 0 failed rows; wall ≤ 1.5 × calls / rate.

Usage: .venv/bin/python benchmarks/bench_rate_limit.py [--samples 20] [--rate 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rate", type=float, default=5.0)
    args = ap.parse_args()
    os.environ["SELFIMPROVE_NO_PROGRESS"] = "1"

    from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate

    from selfimprove.core.records import Policy
    from selfimprove.sim import default_policy, start_server
    from selfimprove.stages.evaluate import evaluate

    better = candidate(Policy(**default_policy("support")).model_copy(update={"system_prompt": BETTER_PROMPT}))
    root = Path(tempfile.mkdtemp(prefix="bench-rate-limit-"))
    sim = start_server("support", seed=0, mode="subprocess")
    try:
        build_run(root, sim.base_url, n=args.samples, candidates=[better])
        shutil.rmtree(root / "production-cache")
        sim.reset_stats()
        sim.configure(rate_limit=args.rate)
        t0 = time.perf_counter()
        out = evaluate(root=root, target="support", candidates="all", concurrency=16, yes=True)
        wall = time.perf_counter() - t0
        stats = sim.stats()
        report = out.report
        failed = sum(e.errors.generation + e.errors.judgement for e in [report.baseline, *report.candidates])
        ok = stats["by_status"].get("200", 0)
        floor = ok / args.rate
        print(f"{args.samples} samples at {args.rate:g} requests/s: {ok} calls answered, "
              f"{stats['by_status'].get('429', 0)} 429s waited out, {failed} rows failed "
              f"(target 0: {'OK' if failed == 0 else 'MISSED'}); wall {wall:.1f} s vs {floor:.1f} s the rate allows "
              f"= {wall / floor:.2f} x (target ≤ 1.5: {'OK' if wall <= 1.5 * floor else 'MISSED'})")
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
