"""`update`: learn candidate policies from the checkpoint's train split and the judges' explanations.

Reads `checkpoint.json` and the train rows of `dataset.parquet` (never a test row), runs the chosen optimizer
(`builtin` textual gradient, or `gepa`) within a hard budget of LLM calls, and writes for every candidate, guard-
rejected ones included, `candidates/<id>.json` (`{"schema": "selfimprove.candidate/1", **Candidate}`) and
`candidates/<id>.diff` (unified diff against its parent), plus `update.json` (the search: validation slice and
scores, failure taxonomy, rounds, spend). All LLM calls go through the run's call cache (`cache/llm/`), so a re-run
is free; an unchanged update (same params, same inputs) is reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError
from selfimprove.optimizers.base import Optimizer

CANDIDATE_SCHEMA = "selfimprove.candidate/1"
UPDATE_SCHEMA = "selfimprove.update/1"
INPUTS = ["checkpoint.json", "dataset.parquet"]


class CandidateRow(BaseModel):
    id: str
    parent: str | None
    role: str
    round: int = 0
    passed_guards: bool
    rejected_by: list[str] = Field(default_factory=list)
    stripped: list[dict[str, str]] = Field(default_factory=list)  # added lines removed as traced to trace data
    val_mean: float | None = None
    edits: list[dict[str, str]] = Field(default_factory=list)
    chars: int
    change: float
    calls: int
    diff: str


class UpdateResult(BaseModel):
    """What an update proposed, and what it spent."""

    target: str
    run: str
    run_path: str = ""
    reused: bool = False
    optimizer: str
    seed: str
    best: str | None
    seed_val_mean: float | None = None
    best_val_mean: float | None = None
    val_samples: int = 0
    trade_off: str | None = None  # why the best replaced the incumbent before it, eval by eval (weights, guardrails)
    candidates: list[CandidateRow]
    taxonomy: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)
    calls: int = 0
    max_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    warnings: list[str] = Field(default_factory=list)


def update(root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
           run: str | None = None, trials: int | None = None, optimizer: str | None = None,
           rounds: int | None = None, max_calls: int | None = None, seed: int = 0, yes: bool = False,
           force: bool = False, wait: bool = False, fewshot: int = 0, focus: str | None = None,
           critique: bool | None = None, config: Any = None, scorer: Any = None, confirm: Callable[[str], bool] | None = None,
           log: Callable[[str], None] | None = None, fork: bool = False, batch: bool | None = None) -> UpdateResult:
    """Propose candidates for the latest run of the target (or `run`). `scorer` replaces the replay scorer (a
    `selfimprove.optimizers.base.Scorer`); `confirm(message)` is asked before spending unless `yes`; `critique`
    (default: config update.critique) asks the optimizer model for a critique of each minibatch sample first;
    `fork` works in a new run forked from the run (store/seal.py: how a sealed run's update is re-run); `batch`
    (default: config llm.batch.enabled) scores candidates through the Batch API (docs/batch.md)."""
    from selfimprove.config.models import with_batch
    from selfimprove.store.runs import Workspace
    from selfimprove.store.seal import stage_run

    if config is None:
        from selfimprove.config.load import load_target

        config = load_target(Path(root), target, overrides)
    config = with_batch(config, batch)
    name = optimizer or config.update.optimizer
    if name not in ("builtin", "gepa"):
        raise UsageError(f"unknown optimizer {name!r}", hint="use --optimizer builtin or --optimizer gepa")
    ws = Workspace(root)
    with ws.lock(config.target, wait=wait), stage_run(ws, config.target, run, "update", fork) as the_run:
        if the_run.record("snapshot") is None:
            raise UsageError(f"run {the_run.run_id} has no checkpoint", hint="build one with `selfimprove snapshot`")
        from selfimprove.telemetry.self_trace import self_traced

        with self_traced(config, "update", the_run.run_id):
            return _update(config, the_run, name, trials, rounds, max_calls, seed, yes, force, fewshot, focus,
                           scorer, confirm, log, critique)


def _settings(cfg: Any, trials: int | None, rounds: int | None, fewshot: int, critique: bool | None = None) -> Any:
    from selfimprove.optimizers.textgrad import SearchSettings

    return SearchSettings.from_config(cfg.update, trials=trials, rounds=rounds, fewshot=fewshot, critique=critique)


def _update(cfg, run, name, trials, rounds, max_calls, seed, yes, force, fewshot, focus, scorer, confirm,
            log, critique=None) -> UpdateResult:
    from dataclasses import asdict

    from selfimprove.core.canonical import pretty_json
    from selfimprove.dataset.table import load_checkpoint

    started = time.monotonic()
    settings = _settings(cfg, trials, rounds, fewshot, critique)
    limit = max_calls or cfg.update.max_calls
    checkpoint = load_checkpoint(run)
    params = {"optimizer": name, "settings": asdict(settings), "max_calls": limit, "seed": seed, "focus": focus,
              "optimizer_model": cfg.llm.optimizer.model, "task_model": checkpoint.policy.model,
              "judges": [e.judge_model for e in checkpoint.evals]}
    with run.stage("update", params=params, inputs=INPUTS, force=force) as st:
        if st.reused:
            result = UpdateResult.model_validate_json((run.path / "update.json").read_text())
            return result.model_copy(update={"run_path": str(run.path), "reused": True,
                                             "seconds": round(time.monotonic() - started, 3)})
        if not yes and confirm is not None and not confirm(
                f"update will spend at most {limit} LLM calls (task, judge and optimizer calls). Continue?"):
            raise UsageError("update cancelled before spending anything", hint="pass --yes to skip the question")
        result, files = run_optimizer(cfg, run.path, checkpoint, name, settings, limit, seed, focus, scorer, log)
        stale = run.path / "candidates"
        if stale.is_dir():  # a previous update's candidates are not this update's outputs
            import shutil

            shutil.rmtree(stale)
        for rel, text in files.items():
            st.write_text(rel, text)
        st.write_text("update.json", pretty_json({"schema": UPDATE_SCHEMA, **result.model_dump(mode="json")}))
    return result.model_copy(update={"run_path": str(run.path), "seconds": round(time.monotonic() - started, 3)})


def run_optimizer(cfg: Any, run_path: Path, checkpoint: Any, name: str, settings: Any, limit: int, seed: int,
                  focus: str | None, scorer: Any, log: Any) -> tuple[UpdateResult, dict[str, str]]:
    """Run the optimizer on the checkpoint's train split; (result, {relative path: file text})."""
    from selfimprove.dataset.table import read_samples
    from selfimprove.llm.accounting import Budget as LedgerBudget
    from selfimprove.llm.accounting import Ledger, price_warning
    from selfimprove.llm.cache import CallCache
    from selfimprove.optimizers.base import Budget, OptimizeContext

    train_ids = set(checkpoint.train_ids)
    train = [s for s in read_samples(run_path / "dataset.parquet", split="train") if s.sample_id in train_ids]
    if not train:
        raise UsageError("the checkpoint has no train samples to learn from", hint="pull more spans, then snapshot")
    include = set(cfg.evals.include)
    evals = tuple(e for e in checkpoint.evals if not include or e.name in include)
    if not evals:
        raise UsageError("no eval to learn from in the checkpoint", hint="check evals.include in the config")
    if any(e.label_only for e in evals):  # no score to climb: not replayed here (evaluate reports their labels)
        if log:
            log("not learning from " + ", ".join(f"{e.name} (labels but no scores)" for e in evals if e.label_only))
        evals = tuple(e for e in evals if not e.label_only)
    ledger = Ledger(cfg.llm.prices, LedgerBudget(max_calls=limit))  # the hard stop, retries included
    cache = CallCache(run_path / "cache" / "llm")
    if scorer is None:
        from selfimprove.evaluation.scorer import ReplayScorer

        batch_dir = run_path / "cache" / "batches" if cfg.llm.batch.enabled else None
        scorer = ReplayScorer.from_config(cfg, evals, cache=cache, ledger=ledger, batch_dir=batch_dir, on_event=log)
    skipped = getattr(scorer, "skipped", {}) or {}
    # an eval that cannot be replayed offline (people's labels, an eval whose spec was not recorded) cannot score
    # a candidate: its production verdicts are feedback only (they cost nothing)
    stored = tuple(e for e in evals if e.name in skipped)
    if stored:
        evals = tuple(e for e in evals if e.name not in skipped)
        if log:
            log("feedback only, not replayed: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())))
    if not evals:
        raise UsageError("none of the checkpoint's evals can be replayed offline",
                         hint="update needs at least one LLM or registered code eval")
    known = {e.name for e in evals}
    unknown = sorted((set(cfg.update.weights) | set(cfg.update.guardrails)) - known)
    if unknown:
        raise UsageError(f"update.weights/guardrails name evals this update does not replay: {', '.join(unknown)}",
                         hint=f"replayed evals: {', '.join(sorted(known))}")
    ctx = OptimizeContext(policy=checkpoint.policy, evals=evals, train=train, scorer=scorer,
                          lm=_optimizer_lm(cfg, cache, ledger), budget=Budget(limit),
                          primary_eval=checkpoint.primary_eval, settings=settings, seed=seed, focus=focus,
                          prices=dict(cfg.llm.prices), log=log, stored_evals=stored,
                          embed=_embedder(cfg.split.embeddings, run_path / "cache" / "llm"),
                          weights=dict(cfg.update.weights), guardrails=tuple(cfg.update.guardrails))
    out = _optimizer(name, settings).optimize(ctx)
    result, files = summarize(cfg.target, run_path.name, name, checkpoint.policy, out, ctx.budget, limit)
    unpriced = price_warning(ledger.unpriced())
    return (result.model_copy(update={"warnings": [unpriced]}) if unpriced else result), files


def _optimizer(name: str, settings: Any) -> Optimizer:
    """The optimizer called `name` (`update.optimizer`): gepa, or the built-in search."""
    if name == "gepa":
        from selfimprove.optimizers.gepa_adapter import GEPAOptimizer

        return GEPAOptimizer(settings)
    from selfimprove.optimizers.textgrad import TextGradOptimizer

    return TextGradOptimizer(settings)


def _embedder(endpoint: Any, cache_dir: Path) -> Any:
    """The failure taxonomy's embeddings: the configured [split.embeddings] endpoint, cached in the run (None
    without one: the taxonomy then clusters TF-IDF vectors)."""
    if endpoint is None:
        return None

    def embed(texts: list[str]) -> Any:
        from selfimprove.llm.embeddings import OpenAIEmbeddings

        with OpenAIEmbeddings.from_endpoint(endpoint, cache=cache_dir) as client:
            return client.embed(texts)

    return embed


def _optimizer_lm(cfg: Any, cache: Any, ledger: Any) -> Any:
    from selfimprove.llm.openai_chat import resolve_api_key
    from selfimprove.optimizers.lm import LedgerMeter, MeteredOptimizerLM, cached_client

    ep = cfg.llm.optimizer
    base_url = ep.base_url or "https://api.openai.com/v1"
    if not ep.model:
        raise UsageError("no optimizer model configured", hint="set llm.optimizer.model in the config")
    client = cached_client(base_url, resolve_api_key(base_url, ep.api_key_env), cache, ledger, ep.timeout_s,
                           ep.max_retries)
    return MeteredOptimizerLM(client, ep.model, LedgerMeter(ledger), prices=dict(cfg.llm.prices))


def summarize(target: str, run_id: str, name: str, seed_policy: Any, out: Any, budget: Any,
              limit: int) -> tuple[UpdateResult, dict[str, str]]:
    """The stage result and the candidate files, from an OptimizeResult."""
    from selfimprove.core.canonical import pretty_json
    from selfimprove.core.diffs import change_ratio, policy_diff
    from selfimprove.optimizers.steps import candidate_id

    seed_id = candidate_id(seed_policy)
    policies = {seed_id: seed_policy} | {c.id: c.policy for c in out.candidates}
    rows, files = [], {}
    for c in out.candidates:
        parent = policies.get(c.parent or seed_id, seed_policy)
        diff = policy_diff(parent, c.policy, c.parent or seed_id, c.id)
        files[f"candidates/{c.id}.json"] = pretty_json({"schema": CANDIDATE_SCHEMA, **c.model_dump(mode="json")})
        files[f"candidates/{c.id}.diff"] = diff
        info = out.info.get(c.id, {})
        rows.append(CandidateRow(
            id=c.id, parent=c.parent, role=str(info.get("role", name)), round=int(info.get("round") or 0),
            passed_guards=c.passed_guards, rejected_by=[f"{g.name}: {g.reason}" for g in c.guards if not g.passed],
            stripped=list(info.get("stripped", [])),
            val_mean=out.val_scores.get(c.id), edits=[e.model_dump() for e in c.edits],
            chars=len(c.policy.system_prompt), change=change_ratio(parent, c.policy), calls=c.calls, diff=diff))
    best_mean = out.val_scores.get(out.best) if out.best else None
    result = UpdateResult(target=target, run=run_id, optimizer=name, seed=seed_id, best=out.best,
                          seed_val_mean=out.val_scores.get(seed_id), best_val_mean=best_mean,
                          val_samples=len(out.val_ids), candidates=rows,
                          trade_off=out.info.get(out.best, {}).get("trade_off") if out.best else None,
                          taxonomy=out.taxonomy, history=out.history,
                          calls=budget.used, max_calls=limit, tokens=budget.tokens,
                          cost_usd=round(budget.cost_usd, 6))
    return result, files
