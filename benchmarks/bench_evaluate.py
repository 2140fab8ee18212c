"""Evaluation speed and the SPRT's saving, against the simulator (200 ms per call, concurrency 32).

1. Wall time: `evaluate` on 500 held-out samples × (generation + one judgement) for one candidate and the
   baseline, with early stopping disabled (min_effect 0.01 on a candidate equal in effect to the baseline), against
   the ideal `calls sent × 0.2 s / 32`. Target: ratio ≤ 1.2.
2. SPRT: the paired primary-eval outcomes of all 500 samples for a truly better candidate (H1 holds) and for one
   with no effect (H0 holds), each fed to the decision test (core.stats.sequential: α 0.05, β 0.05, δ 0.15) in 2,000 random orders; the mean
   samples it used against the fixed-size one-sided z-test with the same α, β, δ and the observed standard
   deviation of the paired difference. Target: mean ≥ 30% below the fixed size.
3. The same candidates evaluated with the default settings (SPRT on): the samples each really used.

Usage: .venv/bin/python benchmarks/bench_evaluate.py [--samples 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

LATENCY_S, CONCURRENCY = 0.2, 32


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--orders", type=int, default=2000)
    args = ap.parse_args()
    os.environ["SELFIMPROVE_NO_PROGRESS"] = "1"

    import pandas as pd
    from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate

    from selfimprove.core.records import Policy
    from selfimprove.core.stats import fixed_sample_size
    from selfimprove.core.stats.sequential import sequential_paths
    from selfimprove.sim import default_policy, start_server
    from selfimprove.stages.evaluate import evaluate

    base = Policy(**default_policy("support"))
    better = candidate(base.model_copy(update={"system_prompt": BETTER_PROMPT}), parent="seed")
    same = candidate(base.model_copy(update={"system_prompt": base.system_prompt + "\n"}), parent="seed")
    root = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    sim = start_server("support", seed=0, mode="subprocess")
    try:
        t0 = time.perf_counter()
        build_run(root, sim.base_url, n=args.samples, candidates=[better, same], max_calls=100_000)
        cfg_path = root / "configs" / "support.toml"
        cfg_path.write_text(cfg_path.read_text().replace("[evals]\n", '[evals]\ninclude = ["policy_compliance"]\n'))
        print(f"built a {args.samples}-sample run in {time.perf_counter() - t0:.1f} s")

        # 1. wall time at 200 ms per call, no early stop
        sim.configure(latency_ms=LATENCY_S * 1000)
        sim.reset_stats()
        t0 = time.perf_counter()
        out = evaluate(root=root, target="support", candidates=same.id, concurrency=CONCURRENCY, yes=True,
                       overrides=["evaluate.min_effect=0.01"])
        wall = time.perf_counter() - t0
        sent = sim.stats()["requests"]
        ideal = sent * LATENCY_S / CONCURRENCY
        n_used = out.report["candidates"][0]["n_samples"]
        hits = (getattr(out, "spent", None) or {}).get("cache_hits", 0)
        print(f"wall time: {wall:.2f} s for {sent} calls sent ({n_used} samples × 2 policies × (generation + 1 "
              f"judgement); {hits} more answered from the run's call cache: the same output judged for both "
              f"policies); ideal {ideal:.2f} s = calls sent × {LATENCY_S} s / {CONCURRENCY}; "
              f"ratio {wall / ideal:.2f} (target ≤ 1.2: {'OK' if wall / ideal <= 1.2 else 'MISSED'})")

        # 2. SPRT vs fixed size on the observed outcomes of all samples (the better candidate scored in full)
        from fixtures.sim_checkpoint import eval_specs

        from selfimprove.config.load import load_config
        from selfimprove.dataset.table import read_samples
        from selfimprove.evaluation.replay import PolicyScorer, score_policy

        run_dir = root / "runs" / "support" / out.run
        frame = pd.read_parquet(run_dir / "results.parquet")
        sim.configure(latency_ms=0)
        scorer = PolicyScorer.from_config(load_config(cfg_path, []), cache_dir=run_dir / "cache" / "llm",
                                          evals=eval_specs()[:1], concurrency=CONCURRENCY)
        samples = read_samples(run_dir / "dataset.parquet", split="test")
        frame = pd.concat([frame, score_policy(better.policy, samples, scorer=scorer, label=better.id)])
        import numpy as np

        rng = np.random.default_rng(0)
        for name, cid in (("H1 (better prompt)", better.id), ("H0 (no effect)", same.id)):
            pairs = paired(frame, cid)
            d = np.array([c - b for b, c in pairs])
            sd = float(d.std()) or 0.5
            fixed = fixed_sample_size(0.05, 0.05, 0.15, sd=sd)
            orders = np.stack([rng.permutation(d) for _ in range(args.orders)])
            res = sequential_paths(orders, level=0.05, beta=0.05, min_effect=0.15, complete=False)
            used = res.used.tolist()
            decisions = {k: int((res.stop == code).sum()) for k, code in
                         (("accept_h1", 1), ("accept_h0", -1), ("continue", 0))}
            mean = statistics.fmean(used)
            print(f"SPRT {name}: mean diff {statistics.fmean(d):+.3f}, sd {sd:.3f}; mean samples {mean:.1f} vs "
                  f"fixed-size {fixed} → {1 - mean / fixed:.0%} fewer (target ≥ 30%: "
                  f"{'OK' if mean <= 0.7 * fixed else 'MISSED'}); decisions over {args.orders} orders: {decisions}")

        # 3. the real thing: default settings, calls from the cache
        real = evaluate(root=root, target="support", candidates="all", concurrency=CONCURRENCY, yes=True, force=True)
        for c in real.report.candidates:
            s = c.evals["policy_compliance"].test
            print(f"evaluate with the decision test: {c.id}: {s.reason if s else 'no test'} "
                  f"({c.n_samples} samples scored, batches of {CONCURRENCY})")
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


def paired(frame, cid: str) -> list[tuple[float, float]]:
    f = frame[frame["eval"] == "policy_compliance"]
    base = dict(zip(f[f["policy"] == "baseline"]["sample_id"], f[f["policy"] == "baseline"]["score"]))
    cand = dict(zip(f[f["policy"] == cid]["sample_id"], f[f["policy"] == cid]["score"]))
    return [(float(base[s]), float(cand[s])) for s in sorted(set(base) & set(cand))
            if base[s] == base[s] and cand[s] == cand[s]]


if __name__ == "__main__":
    main()
