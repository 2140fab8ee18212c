"""`snapshot`: a pulled run's raw spans and annotations -> `dataset.parquet`, `checkpoint.json`, `snapshot.md`.

Also writes `snapshot.json` (this result's deterministic part, for `--json` and for reuse). Bad spans are
counted by reason and never fatal; a run with no usable sample at all is a usage error (exit 2). The stage key
covers the settings (split, filters, chosen policy, evals), the raw tables' digests and the local eval
registry, so an unchanged snapshot is reused.

`--diverse` with `[split.embeddings]` configured embeds each sample's input (the user-visible history) through
that endpoint (cached in `<run>/cache/llm/`, so `--force` pays nothing twice) and clusters the vectors; with no
endpoint, or when it fails (a warning, never fatal), TF-IDF. The method is in the notes and in the counts
(`diverse.embeddings` / `diverse.tfidf`: samples picked each way).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError
from selfimprove.dataset.agreement import JudgeAgreement
from selfimprove.dataset.join import TREE, join_params

CHECKPOINT_SCHEMA = "selfimprove.checkpoint/1"
RAW_INPUTS = ["raw/annotations.parquet", "raw/spans.parquet"]


class PolicySeen(BaseModel):
    digest: str
    model: str
    samples: int
    current: bool
    first: str | None = None
    last: str | None = None
    template_format: str | None = Field(None, description="'F_STRING' or 'MUSTACHE' when the prompt is a template")
    variables: list[str] = Field(default_factory=list, description="the template's variables")
    template_versions: list[str] = Field(default_factory=list, description="llm.prompt_template.version values seen")


class EvalSeen(BaseModel):
    name: str
    kind: str
    spec_source: str = Field(description="'annotation', 'registry' or 'inferred'")
    judge_model: str | None = None
    direction: str = "maximize"
    scored: int = 0
    missing: int = 0
    mean_score: float | None = None
    labels: dict[str, int] = Field(default_factory=dict)


class SnapshotResult(BaseModel):
    """What a snapshot kept, dropped and split."""

    target: str
    run: str = ""
    run_path: str = ""
    reused: bool = False
    policy_digest: str
    policy_model: str
    primary_eval: str | None
    policies: list[PolicySeen]
    evals: list[EvalSeen]
    counts: dict[str, int]
    bad: dict[str, int] = Field(default_factory=dict)
    bad_examples: dict[str, str] = Field(default_factory=dict)
    joins: dict[str, dict[str, int]] = Field(default_factory=dict, description="eval -> how its annotations "
                                             "reached an LLM span ('span', 'parent', 'root', 'ancestor') -> count")
    unjoined: dict[str, int] = Field(default_factory=dict, description="annotations that reached no LLM span, "
                                     "by reason")
    unjoined_examples: dict[str, str] = Field(default_factory=dict)
    ambiguous: dict[str, int] = Field(default_factory=dict, description="eval -> annotations on an ancestor of "
                                      "several LLM spans (one was picked by [join])")
    agreement: list[JudgeAgreement] = Field(default_factory=list, description="LLM judges against human labels "
                                            "on the same spans (every annotated span of the window)")
    filters: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    diverse_method: str | None = Field(None, description="'embeddings' or 'tfidf' when --diverse picked a subset")
    embedding_calls: dict[str, int] | None = Field(None, description="this invocation's embeddings requests: "
                                                   "calls sent, cache_hits, prompt_tokens (not recorded)")
    seconds: float = 0.0


def snapshot(root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
             run: str | None = None, test_size: float | None = None, seed: int | None = None,
             max_samples: int | None = None, diverse: bool = False, filters: list[str] | tuple = (),
             policy: str | None = None, force: bool = False, wait: bool = False,
             config: Any = None, fork: bool = False) -> SnapshotResult:
    """Build the checkpoint of a run (the latest run of the target unless `run` names one); with `fork`, in a
    new run forked from it (store/seal.py: the way to re-run a stage of a sealed run)."""
    from selfimprove.store.runs import Workspace
    from selfimprove.store.seal import stage_run

    if config is None:
        from selfimprove.config.load import load_target

        config = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    with ws.lock(config.target, wait=wait), stage_run(ws, config.target, run, "snapshot", fork) as the_run:
        if the_run.record("pull") is None:
            raise UsageError(f"run {the_run.run_id} has no pulled spans", hint="start a run with `selfimprove pull`")
        return _snapshot(Path(root), config, the_run, test_size, seed, max_samples, diverse, list(filters),
                         policy, force)


def _snapshot(root: Path, cfg: Any, run: Any, test_size: float | None, seed: int | None,
              max_samples: int | None, diverse: bool, filters: list[str], policy: str | None,
              force: bool) -> SnapshotResult:
    from selfimprove.core.canonical import pretty_json
    from selfimprove.core.filters import parse_filter
    from selfimprove.dataset.select import Selection
    from selfimprove.evals.recover import read_registry

    started = time.monotonic()
    exprs = list(cfg.split.filters) + list(filters)
    sel = Selection(test_size=cfg.split.test_size if test_size is None else test_size,
                    seed=cfg.split.seed if seed is None else seed,
                    max_samples=max_samples if max_samples is not None else cfg.split.max_samples,
                    diverse=diverse or cfg.split.diverse, filters=tuple(parse_filter(f) for f in exprs),
                    policy=policy, primary=cfg.evals.primary)
    if not 0 < sel.test_size < 1:
        raise UsageError(f"--test-size must be between 0 and 1, got {sel.test_size}")
    registry = read_registry(root)
    params = {"test_size": sel.test_size, "seed": sel.seed, "max_samples": sel.max_samples,
              "diverse": sel.diverse, "filters": [str(f) for f in sel.filters], "policy": policy,
              "min_policy_samples": cfg.split.min_policy_samples,
              "evals": {"include": list(cfg.evals.include), "primary": cfg.evals.primary,
                        "min_judge_kappa": cfg.evals.min_judge_kappa,
                        "min_agreement_pairs": cfg.evals.min_agreement_pairs},
              "registry": {name: spec.digest for name, spec in sorted(registry.items())},
              "join": join_params(cfg.join)}
    endpoint = cfg.split.embeddings if sel.diverse else None
    embedder = None
    if endpoint is not None:
        from selfimprove.llm.embeddings import DEFAULT_MODEL

        params["embeddings"] = {"model": endpoint.model or DEFAULT_MODEL}  # not the host: like the call cache
        embedder = RunEmbedder(endpoint, run.path / "cache" / "llm")
    inputs = RAW_INPUTS + ([TREE] if (run.path / TREE).exists() else [])
    with run.stage("snapshot", params=params, inputs=inputs, force=force) as st:
        if st.reused:
            result = SnapshotResult.model_validate_json((run.path / "snapshot.json").read_text())
            return result.model_copy(update={"run": run.run_id, "run_path": str(run.path), "reused": True,
                                             "seconds": round(time.monotonic() - started, 3)})
        result, write_dataset, checkpoint, report = build(run.path, cfg, sel, registry, embedder)
        write_dataset(st.path("dataset.parquet"))
        st.write_json("checkpoint.json", {"schema": CHECKPOINT_SCHEMA, **checkpoint.model_dump(mode="json")})
        st.write_text("snapshot.md", report)
        st.write_text("snapshot.json", pretty_json(result.model_dump(mode="json")))
    return result.model_copy(update={"run": run.run_id, "run_path": str(run.path),
                                     "embedding_calls": embedder.calls if embedder else None,
                                     "seconds": round(time.monotonic() - started, 3)})


class RunEmbedder:
    """The `Embedder` snapshot hands to select: the configured endpoint through `OpenAIEmbeddings`, cached in
    the run folder. Building the client (reading the key) happens in `embed`, so a missing key is a fallback
    too. `calls` is what the last `embed` sent and what the cache answered."""

    def __init__(self, endpoint: Any, cache_dir: Path):
        from selfimprove.llm.embeddings import DEFAULT_MODEL

        self.endpoint, self.cache_dir = endpoint, cache_dir
        self.label = endpoint.model or DEFAULT_MODEL
        self.calls: dict[str, int] | None = None

    def embed(self, texts: list[str]) -> Any:
        from selfimprove.llm.embeddings import OpenAIEmbeddings

        with OpenAIEmbeddings.from_endpoint(self.endpoint, cache=self.cache_dir) as client:
            try:
                return client.embed(texts)
            finally:
                snap = client.ledger.snapshot()
                self.calls = {"calls": snap.calls, "cache_hits": snap.cache_hits,
                              "prompt_tokens": snap.prompt_tokens}


def build(run_path: Path, cfg: Any, sel: Any, registry: dict, embedder: Any = None
          ) -> tuple[SnapshotResult, Any, Any, str]:
    """Read the raw tables of a run folder and build (result, dataset table writer, Checkpoint, markdown report).

    The spans are read twice, a batch at a time (bounded memory): once for the structure the joins need and the
    selection (without messages), once for the messages of the chosen samples. The dataset rows go through an
    external sort by sample id; the returned `write(path)` writes them."""

    from selfimprove.core.records import Checkpoint
    from selfimprove.dataset.agreement import agreement_findings, judge_agreements
    from selfimprove.dataset.join import join_run, read_tree
    from selfimprove.dataset.select import build_samples
    from selfimprove.dataset.summary import markdown
    from selfimprove.evals.recover import recover
    from selfimprove.store.documents import read_frame_batches, read_row_batches

    spans_path = run_path / "raw/spans.parquet"
    annotations = read_frame_batches(run_path / "raw/annotations.parquet", categorical=("metadata",))
    recovered = recover(annotations, registry, list(cfg.evals.include) or None)
    structure = read_row_batches(spans_path, columns=["span_id", "trace_id", "parent_id", "name", "span_kind",
                                                      "start_time", "metadata"])
    joined = join_run(structure, read_tree(run_path), recovered.results, cfg.join)
    recovered = replace(recovered, results=joined.results)
    built = build_samples(read_row_batches(spans_path), recovered, sel, embedder)
    evals = sorted(built.specs)
    agreement = judge_agreements(recovered.results, {n: s.kind for n, s in recovered.specs.items()},
                                 cfg.evals.min_judge_kappa, cfg.evals.min_agreement_pairs)
    disagree, few = agreement_findings(agreement, cfg.evals.min_judge_kappa, cfg.evals.min_agreement_pairs)
    warnings = (built.warnings + _warnings(built, recovered, cfg.split.min_policy_samples) + disagree
                + _join_warnings(joined, cfg.join))
    result = SnapshotResult(
        target=cfg.target, policy_digest=built.policy.digest, policy_model=built.policy.model,
        primary_eval=built.primary, policies=[PolicySeen(**p) for p in built.policies],
        evals=[_eval_seen(name, built, recovered.results, recovered.spec_sources[name]) for name in evals],
        counts={**built.counts, **{k: v for k, v in recovered.counts.items()}}, bad=built.bad,
        bad_examples=built.bad_examples, joins=joined.ways, unjoined=joined.unjoined,
        unjoined_examples=joined.examples, ambiguous=joined.ambiguous, agreement=agreement,
        filters=[str(f) for f in sel.filters], warnings=warnings, notes=built.notes + recovered.notes + few, diverse_method=built.diverse_method)
    checkpoint = Checkpoint(
        target=cfg.target, policy=built.policy, evals=tuple(built.specs[n] for n in evals),
        primary_eval=built.primary, train_ids=tuple(sorted(i for i, split in built.split.items() if split == "train")),
        test_ids=tuple(sorted(i for i, split in built.split.items() if split == "test")), counts=result.counts)

    splits, results = built.split, recovered.results  # what the writer needs: the chosen spans are freed

    def write(path: Path) -> Path:
        from selfimprove.dataset.select import samples
        from selfimprove.dataset.table import write_samples

        return write_samples(path, samples(read_row_batches(spans_path), splits, results), evals)

    return result, write, checkpoint, markdown(result, built.policy, checkpoint)


def _eval_seen(name: str, built: Any, by_span: dict[str, dict[str, Any]], source: str) -> EvalSeen:
    spec = built.specs[name]
    chosen = (by_span.get(s.span_id, {}) for s in built.pool)
    results = [evals[name] for evals in chosen if name in evals]
    scores = [r.score for r in results if r.score is not None]
    labels: dict[str, int] = {}
    for r in results:
        if r.label is not None:
            labels[r.label] = labels.get(r.label, 0) + 1
    return EvalSeen(name=name, kind=spec.kind, spec_source=source, judge_model=spec.judge_model,
                    direction=spec.direction, scored=len(scores), missing=len(built.pool) - len(results),
                    mean_score=round(sum(scores) / len(scores), 6) if scores else None,
                    labels=dict(sorted(labels.items())))


def _model_id(name: str | None) -> str:
    return (name or "").strip().lower().rsplit("/", 1)[-1]


def _warnings(built: Any, recovered: Any, min_policy_samples: int = 0) -> list[str]:
    out = []
    held = built.counts.get("current_policy.samples", 0)
    if held < min_policy_samples:
        others = len(built.policies) - 1
        out.append(f"the current policy {built.policy.digest[7:19]} holds {held} samples, fewer than "
                   f"{min_policy_samples} (split.min_policy_samples): too few to learn from or to prove a gain"
                   + (f"; {others} other policies were seen (choose one with --policy)" if others else "")
                   + ". Pull a wider window (--since) or wait for more traffic")
    task_models = {_model_id(p["model"]) for p in built.policies}
    for name, spec in sorted(built.specs.items()):
        if spec.kind == "llm" and spec.judge_model and _model_id(spec.judge_model) in task_models:
            out.append(f"feedback collapse: eval {name!r} is judged by {spec.judge_model}, the same model as the "
                       "task; its scores may favour the task model's own style. Use a different judge model.")
        if spec.kind == "llm" and recovered.spec_sources.get(name) == "inferred":
            out.append(f"eval {name!r} has no recorded spec (template, choices): it cannot be re-judged offline; "
                       f"run it under selfimprove.instrument() or save its spec to evals/{name}.json")
    if built.primary is None:
        out.append("no scored eval found on these samples: update has no feedback to learn from")
    if built.counts.get("test", 0) == 0:
        out.append("the test split is empty (a single trace?): evaluate needs held-out samples")
    if built.primary and built.counts.get(f"missing.{built.primary}", 0):
        out.append(f"{built.counts[f'missing.{built.primary}']} samples have no {built.primary!r} result "
                   "(kept, marked missing)")
    return out


def _join_warnings(joined: Any, join_cfg: Any) -> list[str]:
    from selfimprove.core.join import Selector

    out = []
    if joined.unjoined:
        reasons = ", ".join(f"{k} {v}" for k, v in joined.unjoined.items())
        out.append(f"{sum(joined.unjoined.values())} annotations reached no LLM span ({reasons}); see "
                   "'unjoined' in snapshot.md, and [join] in the config")
    for name, n in joined.ambiguous.items():
        rule = Selector(join_cfg.span_name, dict(join_cfg.metadata), join_cfg.pick).describe()
        out.append(f"{n} {name!r} annotations sit on an ancestor of several LLM spans: each went to {rule} "
                   "([join] span_name, metadata, pick choose another)")
    return out
