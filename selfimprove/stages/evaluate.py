"""`evaluate`: replay held-out samples with each candidate and the current policy, re-judge, decide with statistics.

Reads `checkpoint.json`, `dataset.parquet` (split `test` by default) and `candidates/*.json`; writes
`results.parquet` (one row per sample × policy × eval, sorted), `report.json` (a selfimprove.core.report.Report) and
`report.html`. Evidence from another split never takes the held-out report's place: `--split train` is its own
stage (`evaluate.train`) writing `results.train.parquet`, `report.train.json` and `report.train.html`. The baseline is the checkpoint's current policy, replayed now (`replay`, the default: no drift
between production time and now) or taken from the production outputs and scores (`stored`: cheaper, with a
warning). Samples are scored in a seeded-random order in batches of `concurrency`; an SPRT on the primary eval per
candidate stops its evaluation once the answer is clear (see selfimprove.evaluation.loop). Before spending, the worst-case
calls and cost are estimated: within the config budget (`evaluate.max_calls`, `evaluate.max_usd`) it proceeds;
above it, it asks on a terminal, proceeds with `--yes` (the budget still caps the spend: the loop stops when it is
used up), and refuses otherwise. Every call goes through the run's call cache: killed and re-run, it finishes
without paying twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError
from selfimprove.core.report import Report, report_filename

WRITTEN_COLUMNS_DROP = ("cached", "gen_cached")  # differ between a first run and a cached re-run


class EvalReport(BaseModel):
    """What `evaluate` decided (the report.json document) and what it spent this time."""

    target: str
    run: str
    reused: bool = False
    report: Report
    estimate: dict[str, Any] = Field(default_factory=dict)
    spent: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list)


def evaluate(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
             run: str | None = None, candidates: str = "best", split: str = "test", n: int | None = None,
             concurrency: int | None = None, baseline: str | None = None, focus: str = "all", yes: bool = False,
             force: bool = False, wait: bool = False, config: Any = None,
             confirm: Callable[[str], bool] | None = None, log: Callable[[str], None] | None = None,
             progress: Callable[[int, int, int], None] | None = None, fork: bool = False,
             batch: bool | None = None) -> EvalReport:
    """Evaluate the run's candidates (see the module docstring). `config` replaces loading the target config;
    `confirm(question) -> bool` is asked when the estimate exceeds the budget (None: nobody to ask, so it refuses
    unless `yes`); `log(line)` receives the estimate and warnings as they happen (and the Batch API's progress);
    `progress(done, total, undecided)` is called after each batch; `fork` evaluates in a new run forked from the
    run (store/seal.py: how a sealed run is evaluated again); `batch` (default: config llm.batch.enabled) sends
    replays and judge calls through the Batch API in waves (docs/batch.md). Nothing here writes to a terminal."""
    from selfimprove.config.load import load_target
    from selfimprove.config.models import with_batch
    from selfimprove.store.runs import Workspace
    from selfimprove.store.seal import stage_run

    cfg = with_batch(config if config is not None else load_target(Path(root), target, overrides), batch)
    mode = baseline or cfg.evaluate.baseline
    if mode not in ("replay", "stored"):
        raise UsageError(f"--baseline must be replay or stored, not {mode!r}")
    if focus not in ("all", "discriminative"):
        raise UsageError(f"--focus must be all or discriminative, not {focus!r}")
    if split not in ("test", "train"):
        raise UsageError(f"--split must be test or train, not {split!r}")
    ws = Workspace(root)
    with ws.lock(cfg.target, wait=wait), stage_run(ws, cfg.target, run, stage_name(split), fork) as the_run:
        from selfimprove.telemetry.self_trace import self_traced

        with self_traced(cfg, stage_name(split), the_run.run_id):
            return _evaluate(cfg, ws, the_run, candidates=candidates, split=split, n=n,
                             concurrency=concurrency or cfg.evaluate.concurrency, mode=mode, focus=focus, yes=yes,
                             force=force, hooks=Hooks(confirm, log, progress))


class Hooks(NamedTuple):
    """How evaluate talks to its caller (the CLI supplies terminal versions; a notebook may pass none)."""

    confirm: Callable[[str], bool] | None = None
    log: Callable[[str], None] | None = None
    progress: Callable[[int, int, int], None] | None = None


def _evaluate(cfg: Any, ws: Any, run: Any, *, candidates: str, split: str, n: int | None, concurrency: int,
              mode: str, focus: str, yes: bool, force: bool, hooks: Hooks) -> EvalReport:
    from selfimprove.core.canonical import digest, pretty_json
    from selfimprove.dataset.table import load_checkpoint
    from selfimprove.evaluation import inputs
    from selfimprove.store.documents import read_model

    checkpoint = load_checkpoint(run)
    samples = inputs.load_samples(run, split)
    chosen, cand_files = inputs.select_candidates(run, candidates)
    evals = inputs.included_evals(cfg, checkpoint)
    primary = inputs.primary_eval(cfg, checkpoint, evals)
    warnings: list[str] = []
    tags = inputs.prior_tags(ws, cfg.target, run, samples, primary, checkpoint.policy.digest) if focus != "all" else {}
    order, focus_note = inputs.order_samples(samples, cfg.split.seed, n, focus, tags, cfg.evaluate.cluster_by)
    if focus_note:
        warnings.append(focus_note)
    if mode == "stored":
        warnings.append("baseline 'stored': production outputs and scores were made at another time (and maybe by "
                        "another judge or model version); `--baseline replay` removes that drift")
    judge_override = inputs.judge_override(cfg)
    params = {"candidates": sorted(c.id for c in chosen), "split": split, "n": n, "concurrency": concurrency,
              "baseline": mode, "focus": focus, "evals": [e.digest for e in evals], "primary": primary.name,
              "settings": cfg.evaluate.model_dump(mode="json"), "judge": judge_override, "seed": cfg.split.seed,
              "order": digest([s.sample_id for s in order]),
              "prices": {m: p.model_dump(exclude_none=True) for m, p in sorted(cfg.llm.prices.items())},
              "gate": cfg.gate.model_dump()}
    if cfg.llm.batch.enabled:  # waves change how many samples the sequential test sees past its stop
        params["batch"] = {"wave": cfg.llm.batch.wave}
    stage_inputs = ["checkpoint.json", "dataset.parquet"] + cand_files
    results, report_json, report_html = (report_filename(split, "results", ".parquet"), report_filename(split),
                                         report_filename(split, suffix=".html"))
    artifacts = [results, report_json, report_html]
    with run.stage(stage_name(split), params=params, inputs=stage_inputs, force=force) as st:
        if st.reused:
            report = read_model(run.path / report_json, Report, "evaluation report")
            return EvalReport(target=cfg.target, run=run.run_id, reused=True, report=report, warnings=warnings,
                              artifacts=artifacts)
        digests = {ref["path"]: ref["digest"] for ref in st.inputs}
        report, frame, estimate, spent, more = score_and_report(
            cfg, ws, run, checkpoint, chosen, order, evals, primary, concurrency=concurrency, mode=mode, split=split,
            judge_override=judge_override, yes=yes, hooks=hooks, tags=tags, digests=digests)
        warnings += more
        st.write_table(results, frame.drop(columns=list(WRITTEN_COLUMNS_DROP)))
        st.write_text(report_json, pretty_json(report.document()))
        st.write_text(report_html, page_html(cfg, report, frame, order, checkpoint.policy, chosen))
    return EvalReport(target=cfg.target, run=run.run_id, report=report, estimate=estimate, spent=spent,
                      warnings=warnings, artifacts=artifacts)


def page_html(cfg: Any, report: Report, frame: Any, samples: list[Any], baseline: Any, chosen: list[Any]) -> str:
    """report.html: the report with the gate's verdict on the best candidate (as promote applies it), the prompt
    diff, fixed and broken samples, and a SIMULATOR banner when the task endpoint says it is the simulator."""
    from selfimprove.core.gate import decide
    from selfimprove.evaluation.html import render_html
    from selfimprove.evaluation.page import report_page
    from selfimprove.llm.endpoint import is_simulator
    from selfimprove.stages.promote import gate_settings

    best = report.entry(report.best)
    decision = decide(best.model_dump(mode="json"), gate_settings(cfg, report)) if best else None
    page = report_page(report, frame.to_dict("records"), samples, baseline, {c.id: c.policy for c in chosen},
                       decision=decision, simulated=is_simulator(cfg.llm.task.base_url))
    return render_html(page)


def stage_name(split: str) -> str:
    """`evaluate` on the held-out split; `evaluate.<split>` on any other (its own record and files)."""
    return "evaluate" if split == "test" else f"evaluate.{split}"


def score_and_report(cfg: Any, ws: Any, run: Any, checkpoint: Any, chosen: list[Any], order: list[Any], evals: list[Any],
                      primary: Any, *, concurrency: int, mode: str, split: str, judge_override: Any, yes: bool,
                     hooks: Hooks, tags: dict[str, str], digests: dict[str, str],
                     candidate_files: dict[str, str] | None = None) -> tuple[Report, Any, dict, dict, list[str]]:
    """The evaluation engine `evaluate` and `experiment` share: replay `order` under the checkpoint's policy (the
    baseline) and each of `chosen`, re-judge, run the sequential test, and build the report. `digests` are the
    stage's input digests by relative path; `candidate_files` maps a candidate id to its file when it is not
    candidates/<id>.json. Returns (report, results frame, estimate, spent, warnings)."""
    from selfimprove.core.stats.sequential import SequentialMonitor
    from selfimprove.evaluation import design, inputs
    from selfimprove.evaluation.loop import Arm, cluster_of, run_sequential, stored_baseline_rows
    from selfimprove.evaluation.replay import PolicyScorer, require_renderable, rows_to_frame
    from selfimprove.llm import Budget
    from selfimprove.llm.accounting import price_warning
    from selfimprove.llm.run import run_sync

    ev = cfg.evaluate
    budget = Budget(max_calls=ev.max_calls, max_usd=ev.max_usd)
    batched = cfg.llm.batch.enabled
    scorer = PolicyScorer.from_config(cfg, cache_dir=run.path / "cache" / "llm", evals=evals,
                                      concurrency=concurrency, budget=budget,
                                      batch_dir=run.path / "cache" / "batches" if batched else None,
                                      on_event=hooks.log if batched else None)
    not_replayed = [stored_only_entry(name, why, order) for name, why in scorer.skipped.items()]
    warnings = [stored_only_warning(s) for s in not_replayed]
    if primary.name in scorer.skipped:
        raise UsageError(f"the primary eval '{primary.name}' cannot be replayed: {scorer.skipped[primary.name]}",
                         hint="choose a replayable primary eval (evals.primary), e.g. an LLM judge or a code eval")
    if primary.label_only:
        raise UsageError(f"the primary eval '{primary.name}' has labels but no scores, so no gain can be measured",
                         hint="choose another primary eval (evals.primary) or give the eval's choices scores")
    judged = [e for e in evals if e.name in scorer.judges]
    label_only = [e for e in judged if e.label_only]
    warnings += [f"eval '{e.name}' has labels but no scores (its choices were a plain list): it is replayed and "
                 "its label agreement with the baseline reported, but it takes no part in the statistics, the "
                 "Pareto front or the gate" for e in label_only]
    estimate = inputs.estimate(order, checkpoint.policy, [c.policy for c in chosen], judged, mode, scorer.ledger.prices,
                               batch=batched)
    clusters = {s.sample_id: cluster_of(s, ev.cluster_by) for s in order}
    estimate["power"], power_note = design.power_check(order, clusters, primary, ev, len(chosen), cfg.gate.looks)
    if power_note:
        warnings.append(power_note)
        if hooks.log:
            hooks.log(f"warning: {power_note}")
    _check_budget(estimate, ev, yes, hooks)
    for policy in [checkpoint.policy] * (mode == "replay") + [c.policy for c in chosen]:
        require_renderable(policy, order)
    look = design.prior_looks(ws, cfg.target, run, checkpoint.policy.digest, [c.policy.digest for c in chosen],
                              digests.get("dataset.parquet"))
    level = design.test_level(ev.alpha, len(chosen), cfg.gate.looks)
    arms = [Arm(c.id, c.policy, SequentialMonitor(level, ev.beta, ev.min_effect)) for c in chosen]
    stored = stored_baseline_rows(order, judged, checkpoint.policy, scorer.ledger.prices) if mode == "stored" else None
    progress = _on_batch(len(order), hooks.progress)

    async def main() -> Any:
        try:
            return await run_sequential(scorer, baseline=checkpoint.policy if mode == "replay" else None,
                                        stored=stored, arms=arms, order=order,
                                        batch_size=cfg.llm.batch.wave if batched else concurrency,
                                        primary=primary, on_batch=progress, cluster_by=ev.cluster_by,
                                        prefetch=not batched)
        finally:
            await scorer.llm.aclose()

    outcome = run_sync(main())
    if outcome.stopped in ("budget", "unavailable"):
        warnings.append(f"evaluation stopped early ({outcome.message}); the report covers the "
                        f"{len(set(outcome.baseline_ids))} samples finished before; re-run to resume from the cache")
    snap = scorer.ledger.snapshot()
    if unpriced := price_warning(scorer.ledger.unpriced()):
        warnings.append(unpriced)
    spent = {"calls": snap.calls, "cache_hits": snap.cache_hits, "failed": snap.failed,
             "cost_usd": round(snap.cost_usd, 6), "tokens": snap.tokens, "batched": snap.batched}
    frame = rows_to_frame(outcome.rows)
    report = inputs.build_report(cfg, run, checkpoint, chosen, arms, [e for e in judged if not e.label_only],
                                 primary, outcome, mode, split, judge_override, tags, digests, label_only=label_only,
                                 stored_only=not_replayed, human_agreement=people_agreement(cfg, checkpoint, order),
                                 clusters=clusters, look=look, candidate_files=candidate_files)
    warnings += failed_row_warnings(report)
    return report, frame, estimate, spent, warnings


def failed_row_warnings(report: Any) -> list[str]:
    """One line per policy whose generations or judgements failed: failed rows are counted, never silent."""
    out = []
    for who, entry in [("baseline", report.baseline), *((c.id, c) for c in report.candidates)]:
        if entry.errors.generation or entry.errors.judgement:
            out.append(f"{who}: {entry.errors.generation} generation(s) and {entry.errors.judgement} judgement(s) "
                       f"failed of {entry.n_samples} samples (see results.parquet's error columns); the "
                       "statistics exclude them")
    return out


def _check_budget(estimate: dict[str, Any], ev: Any, yes: bool, hooks: Hooks) -> None:
    """Tell the estimate; above the budget go on only with `yes` or a confirmed question, else refuse."""
    over = []
    if estimate["calls"] > ev.max_calls:
        over.append(f"{estimate['calls']} calls > evaluate.max_calls={ev.max_calls}")
    if ev.max_usd is not None and estimate["cost_usd"] > ev.max_usd:
        over.append(f"${estimate['cost_usd']:.4f} > evaluate.max_usd={ev.max_usd}")
    if hooks.log:
        hooks.log(f"estimate: at most {estimate['calls']} LLM calls, ~{estimate['tokens']} tokens, "
                  f"~${estimate['cost_usd']:.4f} (the SPRT may stop earlier; cached calls are free)")
    if not over or yes:
        return
    question = f"{'; '.join(over)}. Spend up to the budget (evaluation stops when it is used up)?"
    if hooks.confirm is not None and hooks.confirm(question):
        return
    raise UsageError(f"the estimate exceeds the budget: {'; '.join(over)}",
                     hint="pass --yes to spend up to the budget, evaluate fewer samples with --n, or raise "
                          "evaluate.max_calls / evaluate.max_usd")


def _on_batch(total: int, progress: Callable[[int, int, int], None] | None) -> Any:
    """The loop's per-batch callback, as `progress(done, total, undecided candidates)`."""
    if progress is None:
        return None
    return lambda done, _total, arms: progress(done, total, sum(1 for a in arms if a.active))


def stored_only_entry(name: str, why: str, samples: list[Any]) -> Any:
    """What the report says of an eval it cannot replay (people's labels, an eval whose spec was not recorded):
    why, and its stored baseline, the production verdicts of the current policy on these samples."""
    from selfimprove.core.report import StoredOnly

    scores = [s.evals[name].score for s in samples if name in s.evals and s.evals[name].score is not None]
    return StoredOnly(name=name, why=why, stored_mean=round(sum(scores) / len(scores), 6) if scores else None,
                      n=len(scores))


def stored_only_warning(entry: Any) -> str:
    stored = (f"stored baseline {entry.stored_mean:.3f} (production, current policy) on {entry.n} samples"
              if entry.stored_mean is not None else "no stored score on these samples")
    return f"eval '{entry.name}' is not replayed: {entry.why}; {stored}; it takes no part in the statistics or the gate"


def people_agreement(cfg: Any, checkpoint: Any, samples: list[Any]) -> list[Any]:
    """Each LLM judge against people's labels, on these samples' production verdicts."""
    from selfimprove.dataset.agreement import judge_agreements

    return judge_agreements({s.sample_id: s.evals for s in samples}, {e.name: e.kind for e in checkpoint.evals},
                            cfg.evals.min_judge_kappa, cfg.evals.min_agreement_pairs)
