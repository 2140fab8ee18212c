"""What `evaluate` reads and decides before and after scoring: samples, candidates, evals, sample
order and focus, the spend estimate, and the report document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfimprove.core.errors import GateFailed, UsageError
from selfimprove.core.records import Candidate, Checkpoint, EvalSpec, Policy, Sample
from selfimprove.core.report import REPORT_SCHEMA, Report
from selfimprove.store.documents import read_frame, read_json, read_model


def load_samples(run: Any, split: str) -> list[Sample]:
    from selfimprove.dataset.table import read_samples

    samples = read_samples(run.path / "dataset.parquet", split=split)
    if not samples:
        raise UsageError(f"no '{split}' samples in run {run.run_id}", hint="check the snapshot's split settings")
    return samples


def select_candidates(run: Any, which: str) -> tuple[list[Candidate], list[str]]:
    """(candidates, their relative paths): `all` = those that passed their guards, `best` = update's best, or
    one id (a failed-guards candidate is evaluated only when named)."""
    folder = run.path / "candidates"
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        found[path.stem] = read_model(path, Candidate, "candidate", drop=("schema",))
    if not found:
        raise UsageError(f"no candidates in run {run.run_id}", hint="run `selfimprove update` first")
    if which == "all":
        ids = [cid for cid, c in found.items() if c.passed_guards]
        if not ids:
            raise GateFailed("no candidate earned an evaluation: every candidate failed its guard checks",
                             reasons=[f"{cid}: failed its guards" for cid in found],
                             hint="production is unchanged; name one with --candidates ID to evaluate it anyway")
    elif which == "best":
        upd = run.path / "update.json"
        best = read_json(upd, "update result").get("best") if upd.is_file() else None
        if upd.is_file() and best is None:
            raise GateFailed("no candidate earned an evaluation: update found none better than the current policy "
                             "on its validation slice of train", reasons=[f"{len(found)} candidate(s), none best"],
                             hint="production is unchanged; to test them on held-out data anyway: "
                                  "`selfimprove evaluate --candidates all` (or an id)")
        if best not in found:
            raise UsageError(f"update named no best candidate ({'its best ' + repr(best) + ' has no file' if best else 'no update.json'})",
                             hint="re-run `selfimprove update`, or evaluate with --candidates all or an id")
        ids = [best]
    else:
        ids = [cid for cid in found if cid == which] or [cid for cid in found if cid.startswith(which)]
        if len(ids) != 1:
            raise UsageError(f"candidate {which!r} {'is ambiguous' if ids else 'not found'}",
                             hint=f"candidates: {', '.join(found)}")
    return [found[i] for i in ids], [f"candidates/{i}.json" for i in ids]


def included_evals(cfg: Any, checkpoint: Checkpoint) -> list[EvalSpec]:
    evals = [e for e in checkpoint.evals if not cfg.evals.include or e.name in cfg.evals.include]
    if not evals:
        raise UsageError("the checkpoint holds no eval to replay", hint="check evals.include in the config")
    return evals


def primary_eval(cfg: Any, checkpoint: Checkpoint, evals: Sequence[EvalSpec]) -> EvalSpec:
    name = cfg.evals.primary or checkpoint.primary_eval or evals[0].name
    for e in evals:
        if e.name == name:
            return e
    raise UsageError(f"primary eval '{name}' is not among the evals ({', '.join(e.name for e in evals)})",
                     hint="set evals.primary")


def judge_override(cfg: Any) -> dict[str, Any] | None:
    j = cfg.llm.judge
    if j is None:
        return None
    return {"model": j.model, "base_url": j.base_url, "api_key_env": j.api_key_env}


def prior_tags(ws: Any, target: str, run: Any, samples: Sequence[Sample], primary: EvalSpec,
               baseline_digest: str) -> dict[str, str]:
    """trivial / discriminative / challenging per sample, across every policy seen so far on these samples: the
    production verdicts and every results.parquet of the target's runs. Empty with fewer than two policies."""
    import pandas as pd

    from selfimprove.core.scores import normalize as normalized
    from selfimprove.core.stats import classify_samples

    ids = {s.sample_id for s in samples}
    matrix: dict[str, dict[str, float | None]] = {sid: {} for sid in ids}
    for s in samples:
        r = s.evals.get(primary.name)
        if r is not None and r.score is not None:
            matrix[s.sample_id]["production:" + (s.policy_digest or baseline_digest)] = normalized(r.score, primary)
    for other in ws.runs(target):
        path = other.path / "results.parquet"
        if not path.is_file():
            continue
        frame = read_frame(path, columns=["sample_id", "policy_digest", "eval", "score"])
        frame = frame[(frame["eval"] == primary.name) & frame["sample_id"].isin(ids)]
        for sid, pol, score in zip(frame["sample_id"], frame["policy_digest"], frame["score"]):
            matrix[sid][pol] = normalized(None if pd.isna(score) else float(score), primary)
    if len({p for by in matrix.values() for p in by}) < 2:
        return {}
    return classify_samples(matrix)


def order_samples(samples: Sequence[Sample], seed: int, n: int | None, focus: str,
                  tags: dict[str, str], cluster_by: str = "trace") -> tuple[list[Sample], str | None]:
    from selfimprove.evaluation.loop import cluster_order

    order = cluster_order(samples, seed, cluster_by)
    note = None
    if focus == "discriminative":
        chosen = [s for s in order if tags.get(s.sample_id) == "discriminative"]
        if chosen:
            counts = {t: sum(1 for s in order if tags.get(s.sample_id) == t) for t in ("trivial", "challenging")}
            note = (f"focus: {len(chosen)} discriminative samples of {len(order)} (skipping {counts['trivial']} "
                    f"trivial, {counts['challenging']} challenging)")
            order = chosen
        else:
            note = ("focus: no sample is tagged discriminative yet (that needs two policies' results on these "
                    "samples); evaluating all")
    return (order[:n] if n else order), note


def estimate(order: Sequence[Sample], baseline: Policy, candidates: Sequence[Policy], judged: Sequence[EvalSpec],
             mode: str, prices: Any, batch: bool = False) -> dict[str, Any]:
    """Worst-case calls (every sample, no early stop) with rough tokens (4 characters a token) and cost (at the
    batch price with `batch`)."""
    policies = list(candidates) + ([baseline] if mode == "replay" else [])
    llm_evals = [e for e in judged if e.kind == "llm"]
    calls = tokens = 0
    cost = 0.0
    for s in order:
        hist = sum(len(m.text()) for m in s.history if m.role not in ("system", "developer"))
        out = s.completion_tokens or (len(s.output.text()) // 4 if s.output else 150)
        for p in policies:
            prompt = (hist + len(p.system_prompt) + sum(len(m.text()) for m in p.few_shot)) // 4 + 8
            calls, tokens, cost = calls + 1, tokens + prompt + out, cost + prices.cost(p.model, prompt, out, batch=batch)
            for e in llm_evals:
                jp = (len(str(e.template)) + hist) // 4 + out + 20
                calls, tokens = calls + 1, tokens + jp + 80
                cost += prices.cost(e.judge_model or "", jp, 80, batch=batch)
    return {"calls": calls, "tokens": tokens, "cost_usd": round(cost, 6), "samples": len(order),
            "policies": len(policies), "llm_evals": len(llm_evals)}


def build_report(cfg: Any, run: Any, checkpoint: Checkpoint, chosen: Sequence[Candidate], arms: Sequence[Any],
                 judged: Sequence[EvalSpec], primary: EvalSpec, outcome: Any, mode: str, split: str,
                 judge_override: dict[str, Any] | None, tags: dict[str, str], digests: dict[str, str],
                 label_only: Sequence[EvalSpec] = (), stored_only: Sequence[Any] = (),
                 human_agreement: Sequence[Any] = (), *, clusters: dict[str, str] | None = None,
                 look: int = 1, candidate_files: dict[str, str] | None = None) -> Report:
    """The report.json document (selfimprove.core.report.Report); deterministic for the same scored rows.
    `judged` are the scored evals (statistics, Pareto, gate); `label_only` evals get `label_agreement` only;
    `digests` are the stage's input digests by relative path (dataset, checkpoint, candidate files); `clusters`
    maps every planned sample to its cluster; `look` is which look at these comparisons this is;
    `candidate_files` names a candidate's file when it is not candidates/<id>.json (an experiment's test arm)."""
    import statistics

    from selfimprove.core.gate import settings_for_report
    from selfimprove.core.scores import normalize
    from selfimprove.core.stats import classify_samples
    from selfimprove.core.stats.multiple import correction_text
    from selfimprove.core.stats.sequential import TEST_NAME
    from selfimprove.evaluation import report as rep
    from selfimprove.evaluation.design import test_level

    ev = cfg.evaluate
    rows = outcome.rows
    idx = rep.score_index(rows)
    base_ids = list(dict.fromkeys(outcome.baseline_ids))
    by_id = {c.id: c for c in chosen}
    looks = cfg.gate.looks
    level = test_level(ev.alpha, len(arms), looks)
    entries = []
    for arm in arms:
        used = list(dict.fromkeys(arm.used))
        ks = [(clusters or {}).get(sid, sid) for sid in used]
        evals = {}
        for spec in judged:
            base = [idx.get((rep.BASELINE, spec.name, sid)) for sid in used]
            cand = [idx.get((arm.id, spec.name, sid)) for sid in used]
            test = rep.primary_test(spec, base, cand, ks, level=level, beta=ev.beta, min_effect=ev.min_effect,
                                    seed=cfg.split.seed, n_available=len(clusters or {}),
                                    clusters_available=len(set((clusters or {}).values()))
                                    ) if spec.name == primary.name else None
            evals[spec.name] = rep.eval_entry(spec, base, cand, ks, test=test, n_resamples=ev.bootstrap_resamples,
                                              seed=cfg.split.seed)
        cost = rep.cost_summary(rep.generation_rows(rows, arm.id, set(used)))
        cost["baseline_per_call_usd"] = rep.cost_summary(rep.generation_rows(rows, rep.BASELINE, set(used)))["per_call_usd"]
        entries.append({"id": arm.id, "policy_digest": arm.policy.digest,
                        "candidate_digest": digests[(candidate_files or {}).get(arm.id, f"candidates/{arm.id}.json")],
                        "passed_guards": by_id[arm.id].passed_guards,
                        "parent": by_id[arm.id].parent, "evals": evals, "cost": cost,
                        "errors": rep.error_counts(rows, arm.id, set(used)), "n_samples": len(used)})
        if label_only:
            entries[-1]["label_agreement"] = rep.label_agreement(rows, arm.id, set(used), label_only)

    def means(policy: str, ids: Sequence[str]) -> dict[str, float | None]:
        out = {}
        for spec in judged:
            vals = [v for v in (normalize(idx.get((policy, spec.name, sid)), spec) for sid in ids) if v is not None]
            out[spec.name] = statistics.fmean(vals) if vals else None
        return out

    base_cost = rep.cost_summary(rep.generation_rows(rows, rep.BASELINE, set(base_ids)))
    points = [(rep.BASELINE, means(rep.BASELINE, base_ids), base_cost["per_call_usd"])]
    points += [(e["id"], means(e["id"], list(dict.fromkeys(a.used))), e["cost"]["per_call_usd"])
               for e, a in zip(entries, arms)]
    joint, per_eval = rep.pareto_flags(points, judged)
    for e in entries:
        e["pareto"], e["pareto_evals"] = joint[e["id"]], per_eval[e["id"]]
    matrix: dict[str, dict[str, float | None]] = {}
    for (pol, name, sid), score in idx.items():
        if name == primary.name:
            matrix.setdefault(sid, {})[pol] = normalize(score, primary)
    after = classify_samples(matrix)
    llm_names = {e.name for e in (*judged, *label_only) if e.kind == "llm"}
    gen_ok = {(r["policy"], r["sample_id"]) for r in rows if not r.get("gen_error")
              and not (mode == "stored" and r["policy"] == rep.BASELINE)}
    judge_ok = [r for r in rows if r["eval"] in llm_names and not r.get("error")
                and not (mode == "stored" and r["policy"] == rep.BASELINE)]
    gen_cost = {(r["policy"], r["sample_id"]): float(r.get("gen_cost_usd") or 0.0) for r in rows}
    cost_usd = sum(gen_cost[k] for k in gen_ok) + sum(float(r.get("cost_usd") or 0.0) for r in judge_ok)
    extra = {"label_only_evals": [e.name for e in label_only]} if label_only else {}
    decision = {"test": TEST_NAME, "alpha": ev.alpha, "beta": ev.beta, "min_effect": ev.min_effect,
                "candidates": len(arms), "look": look, "looks": looks, "level_per_test": level,
                "cluster_by": ev.cluster_by, "correction": correction_text(len(arms), look, looks, ev.alpha),
                "regression_checks": "Holm over each candidate's guardrail evals, one-sided cluster-robust t test",
                "scores": "normalized: [0, 1], 1 best, missing pairs dropped and counted (core.scores)"}
    gate = settings_for_report(cfg.gate, {"candidates": entries, "decision": decision}, primary.name,
                               alpha=ev.alpha)
    for e in entries:
        e["decision"] = rep.decision_summary(e, gate)
    return Report.model_validate({
        **extra, "decision": decision,
        "schema": REPORT_SCHEMA, "target": cfg.target, "run": run.run_id, "split": split,
        "n_samples": len(base_ids),
        "inputs": {"dataset": digests["dataset.parquet"], "checkpoint": digests["checkpoint.json"]},
        "primary_eval": primary.name,
        "baseline": {"policy_digest": checkpoint.policy.digest, "mode": mode, "pareto": joint[rep.BASELINE],
                     "pareto_evals": per_eval[rep.BASELINE], "means": points[0][1], "cost": base_cost,
                     "n_samples": len(base_ids), "errors": rep.error_counts(rows, rep.BASELINE, set(base_ids))},
        "judge_override": judge_override, "candidates": entries,
        "best": rep.choose_best(entries, gate),
        "verdicts": {e["id"]: rep.verdicts(e, gate) for e in entries},
        "calls": len(gen_ok) + len(judge_ok), "cost_usd": round(cost_usd, 6),
        "stopped": outcome.stopped, "evals": [e.name for e in judged],
        "settings": {"alpha": ev.alpha, "beta": ev.beta, "min_effect": ev.min_effect, "seed": cfg.split.seed,
                     "cluster_by": ev.cluster_by, "looks": looks},
        "tags": {"before": _count(tags), "after": _count(after)},
        "stored_only": list(stored_only), "human_agreement": list(human_agreement),
    })


def _count(tags: dict[str, str]) -> dict[str, int]:
    return {t: sum(1 for v in tags.values() if v == t) for t in ("trivial", "discriminative", "challenging")}
