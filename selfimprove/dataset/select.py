"""From raw spans and annotations to the samples of a checkpoint: parse, join, filter, choose the current
policy, deduplicate, subsample, split. No I/O: `build_samples` takes batches of row dicts and returns the chosen
spans (without their messages: memory stays small however many spans there are), their split and the counts;
`samples` turns a second reading of the rows into the Samples of the chosen spans, a batch at a time.

Order matters and is fixed: bad spans are counted and dropped; the filter chain runs on parsed samples with their
evals; the current policy is chosen among what is left (the latest call's policy unless one is named);
identical inputs (the history without its system messages) keep one sample — preferring the current policy,
then more evals, then the latest; `max_samples` keeps a seeded random or a maximally varied (`diverse`) subset;
the split is by trace, stratified by the primary eval's score.

`diverse` clusters the inputs' vectors: embeddings from the `Embedder` the stage passes in (its only I/O, behind
a Protocol), or TF-IDF when there is none or it fails (a warning, never fatal).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from selfimprove.core.canonical import digest
from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.core.filters import Filter, matches
from selfimprove.core.records import EvalResult, EvalSpec, Policy, Sample
from selfimprove.core.split import SplitItem, seeded_order, split_by_trace
from selfimprove.dataset.policies import renderable, template_notes, unmarked_templates, unreplayed_params
from selfimprove.evals.latest import Verdict
from selfimprove.evals.recover import Recovered
from selfimprove.telemetry.spans import BAD_REASONS, BadSpan, ParsedSpan, parse_span


@dataclass(frozen=True)
class Selection:
    test_size: float
    seed: int
    max_samples: int | None = None
    diverse: bool = False
    filters: tuple[Filter, ...] = ()
    policy: str | None = None  # a digest prefix naming the current policy
    primary: str | None = None


class Embedder(Protocol):
    """Vectors for `--diverse`. `label` names the method in notes (e.g. the model). `embed` returns an n x d
    matrix, one row per text in order, or raises SelfimproveError when it cannot (the caller falls back)."""

    label: str

    def embed(self, texts: list[str]) -> Any: ...


@dataclass
class Built:
    pool: list[ParsedSpan]  # the chosen spans by span id, without history and output (`samples` reads them)
    split: dict[str, str]  # span id -> "train" | "test"
    policy: Policy
    specs: dict[str, EvalSpec]
    primary: str | None
    counts: dict[str, int]
    bad: dict[str, int]
    policies: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bad_examples: dict[str, str] = field(default_factory=dict)
    diverse_method: str | None = None  # "embeddings" or "tfidf" when a diverse subset was picked


@dataclass
class Parsed:
    """Every good span of a run without its messages (`spans`), with what selection needs of them: the input
    key each dedupes on, and the input text when a diverse subset is to be picked."""

    spans: list[ParsedSpan] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    bad: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    rows: int = 0


def parse_all(batches: Iterable[list[dict[str, Any]]], keep_text: bool = False) -> Parsed:
    out = Parsed()
    policies: dict[tuple, Any] = {}
    for rows in batches:
        out.rows += len(rows)
        for row in rows:
            span = parse_span(row, policies)
            if isinstance(span, BadSpan):
                out.bad[span.reason] += 1
                out.examples.setdefault(span.reason, f"{span.span_id}: {span.detail}")
                continue
            out.keys[span.span_id] = input_key(span)
            if keep_text:
                out.texts[span.span_id] = input_text(span)
            out.spans.append(replace(span, history=(), output=None))  # the messages are read again by `samples`
    return out


def _fields(span: ParsedSpan, evals: dict[str, Any]) -> dict[str, Any]:
    return {"model": span.policy.model, "policy_digest": span.policy_digest, "start_time": span.start_time,
            "evals": evals, "metadata": span.metadata}


def _time_key(span: ParsedSpan) -> tuple:
    return (span.start_time.isoformat() if span.start_time else "", span.span_id)


def choose_policy(spans: list[ParsedSpan], wanted: str | None) -> tuple[Policy, list[dict[str, Any]]]:
    """The current policy (the latest call's, or the one whose digest starts with `wanted`) and a summary of
    every policy seen, newest first."""
    seen: dict[str, dict[str, Any]] = {}
    for s in sorted(spans, key=_time_key):
        entry = seen.setdefault(s.policy_digest, {"digest": s.policy_digest, "model": s.policy.model,
                                                  "samples": 0, "first": s.start_time, "policy": s.policy,
                                                  "versions": set()})
        if s.template_version is not None:
            entry["versions"].add(s.template_version)
        entry["samples"] += 1
        entry["last"] = s.start_time
    latest = max(spans, key=_time_key).policy_digest
    if wanted:
        want = wanted if wanted.startswith("sha256:") else "sha256:" + wanted
        hits = [d for d in seen if d.startswith(want)]
        if len(hits) != 1:
            listing = ", ".join(d[7:19] for d in seen)
            raise UsageError(f"--policy {wanted} matches {len(hits)} of the policies seen ({listing})",
                             hint="give a longer digest prefix" if hits else "see `selfimprove snapshot` output")
        latest = hits[0]
    summary = []
    for d, e in sorted(seen.items(), key=lambda kv: (kv[1]["last"] is not None, kv[1]["last"] or 0), reverse=True):
        summary.append({"digest": d, "model": e["model"], "samples": e["samples"], "current": d == latest,
                        "first": e["first"].isoformat() if e["first"] else None,
                        "last": e["last"].isoformat() if e["last"] else None,
                        "template_format": e["policy"].template_format,
                        "variables": sorted(e["policy"].variables),
                        "template_versions": sorted(e["versions"])})
    return seen[latest]["policy"], summary


def input_key(span: ParsedSpan) -> Any:
    """What identifies a call's input: its history without the system messages, and its template variables (the
    same question for two teams is two inputs). Hashable, and small: a SHA-256 of the messages' full
    representation, not the messages (a snapshot keeps one per span)."""
    visible = tuple(m for m in span.history if m.role not in ("system", "developer"))
    key = hashlib.sha256(repr(visible).encode("utf-8", "surrogatepass")).digest()
    return key if span.variables is None else (key, digest(span.variables))


def input_text(span: ParsedSpan) -> str:
    return "\n".join(m.text() for m in span.history if m.role not in ("system", "developer"))


def build_samples(span_batches: Iterable[list[dict[str, Any]]], recovered: Recovered, sel: Selection,
                  embedder: Embedder | None = None) -> Built:
    """Select and split the samples of batches of raw span rows; see the module docstring."""
    read = parse_all(span_batches, keep_text=sel.diverse and sel.max_samples is not None)
    parsed, bad, examples = read.spans, read.bad, read.examples
    counts: dict[str, int] = {"spans": read.rows, "bad": sum(bad.values()), "parsed": len(parsed)}
    notes: list[str] = []
    multi = sum(1 for s in parsed if s.extra_outputs)
    if multi:
        notes.append(f"{multi} calls returned several choices: the first is kept as the output")
    template_notes(parsed, counts, notes)
    unreplayed = unreplayed_params(parsed, counts)
    kept = [s for s in parsed if all(matches(f, _fields(s, recovered.results.get(s.span_id, {})))
                                      for f in sel.filters)]
    counts["filtered"] = len(parsed) - len(kept)
    if not kept:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none bad"
        raise UsageError(f"no usable samples: {read.rows} spans, {len(parsed)} parsed, "
                         f"{counts['filtered']} filtered out (bad: {reasons})",
                         hint="check --filter and the target's span filter, or pull a wider window")
    policy, policies = choose_policy(kept, sel.policy)
    current = policy.digest
    warnings: list[str] = unmarked_templates(kept) + unreplayed
    kept, unrenderable = renderable(kept, policy)
    counts["dropped.template_variables"] = unrenderable
    if unrenderable:
        notes.append(f"{unrenderable} calls of other policies have no values for the current template's variables "
                     f"({', '.join(sorted(policy.variables))}): left out, since replaying them would send a "
                     "placeholder")
    best: dict[str, ParsedSpan] = {}
    for s in kept:
        key = read.keys[s.span_id]
        rank = (s.policy_digest == current, len(recovered.results.get(s.span_id, {})), _time_key(s))
        other = best.get(key)
        if other is None or rank > (other.policy_digest == current,
                                    len(recovered.results.get(other.span_id, {})), _time_key(other)):
            best[key] = s
    pool = sorted(best.values(), key=lambda s: s.span_id)
    counts["duplicates"] = len(kept) - len(pool)
    pool, method = _subsample(pool, sel, notes, counts, warnings, embedder, read.texts)
    evals = sorted({name for s in pool for name in recovered.results.get(s.span_id, {})})
    specs = {name: recovered.specs[name] for name in evals}
    primary = _primary(sel.primary, specs, pool, recovered)
    items = [SplitItem(s.span_id, s.trace_id, _score(recovered, s.span_id, primary)) for s in pool]
    split = split_by_trace(items, sel.test_size, sel.seed)
    del items
    results = recovered.results
    counts.update(samples=len(pool), train=sum(split[s.span_id] == "train" for s in pool),
                  test=sum(split[s.span_id] == "test" for s in pool), traces=len({s.trace_id for s in pool}),
                  policies=len(policies), **{"current_policy.samples": sum(s.policy_digest == current
                                                                         for s in pool)})
    for name in evals:
        counts[f"missing.{name}"] = sum(name not in results.get(s.span_id, {}) for s in pool)
    for reason in BAD_REASONS:
        counts[f"bad.{reason}"] = bad.get(reason, 0)
    return Built(pool, split, policy, specs, primary, counts, dict(bad),
                 policies, warnings=warnings, notes=notes, bad_examples=examples, diverse_method=method)


def samples(span_batches: Iterable[list[dict[str, Any]]], splits: dict[str, str],
            results: dict[str, dict[str, Any]]) -> Iterator[list[Sample]]:
    """The Samples of the chosen spans (`splits`: span id -> split, `Built.split`; `results`: their evals), parsed
    again from a second reading of the rows, a batch at a time (in the rows' order)."""
    policies: dict[tuple, Any] = {}
    for rows in span_batches:
        batch = []
        for row in rows:
            split = splits.get(str(row.get("span_id")))
            if split is None:
                continue
            s = parse_span(row, policies)
            batch.append(Sample(sample_id=s.span_id, span_id=s.span_id, trace_id=s.trace_id,
                                start_time=s.start_time.isoformat() if s.start_time else None, history=s.history,
                                output=s.output, evals={n: _record(v) for n, v in results.get(s.span_id, {}).items()},
                                prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
                                latency_ms=s.latency_ms, policy_digest=s.policy_digest, split=split,
                                variables=s.variables))
        yield batch


def _record(verdict: Any) -> EvalResult:
    return verdict.result() if isinstance(verdict, Verdict) else verdict


def _subsample(pool: list[ParsedSpan], sel: Selection, notes: list[str], counts: dict[str, int],
               warnings: list[str], embedder: Embedder | None, texts: dict[str, str]
               ) -> tuple[list[ParsedSpan], str | None]:
    if sel.max_samples is None or len(pool) <= sel.max_samples:
        if sel.diverse and sel.max_samples is None:
            notes.append("--diverse picks a subset of --max-samples samples; without it every sample is kept")
        counts["dropped.max_samples"] = 0
        return pool, None
    method = None
    if sel.diverse:
        picks, method = diverse_picks([texts[s.span_id] for s in pool], sel.max_samples, sel.seed, embedder, warnings)
        chosen = [pool[i] for i in picks]
        source = f"embeddings ({embedder.label})" if method == "embeddings" and embedder else "TF-IDF"
        notes.append(f"--diverse: {len(chosen)} of {len(pool)} samples picked from {source} clusters of the inputs")
        counts["diverse.embeddings"] = len(chosen) if method == "embeddings" else 0
        counts["diverse.tfidf"] = len(chosen) if method == "tfidf" else 0
    else:
        keep = set(seeded_order([s.span_id for s in pool], sel.seed)[:sel.max_samples])
        chosen = [s for s in pool if s.span_id in keep]
    counts["dropped.max_samples"] = len(pool) - len(chosen)
    return chosen, method


def diverse_picks(texts: list[str], k: int, seed: int, embedder: Embedder | None,
                  warnings: list[str]) -> tuple[list[int], str]:
    """(sorted indexes of `k` varied texts, "embeddings" | "tfidf"). Embeddings when an embedder is given and
    works; otherwise TF-IDF, with a warning when the embedder failed."""
    from selfimprove.core.diverse import normalise_rows, select_diverse, select_diverse_rows

    if embedder is not None:
        try:
            x = normalise_rows(embedder.embed(texts))
            if x.shape[0] != len(texts):
                raise ValueError(f"{x.shape[0]} vectors for {len(texts)} texts")
            return select_diverse_rows(x, k, seed), "embeddings"
        except (SelfimproveError, ValueError) as e:
            why = e.message if isinstance(e, SelfimproveError) else str(e)
            warnings.append(f"--diverse: no embeddings ({why}); the subset was picked from TF-IDF clusters "
                            "instead. Re-run snapshot with --force once the endpoint works")
    return select_diverse(texts, k, seed), "tfidf"


def _score(recovered: Recovered, span_id: str, primary: str | None) -> float | None:
    if primary is None:
        return None
    result = recovered.results.get(span_id, {}).get(primary)
    return None if result is None else result.score


def _primary(configured: str | None, specs: dict[str, EvalSpec], pool: list[ParsedSpan],
             recovered: Recovered) -> str | None:
    if configured:
        if configured not in specs:
            found = ", ".join(sorted(specs)) or "none"
            raise UsageError(f"primary eval {configured!r} is not among the evals found ({found})",
                             hint="set evals.primary to one of them, or check that the eval ran on these spans")
        return configured
    scored = Counter(name for s in pool for name, r in recovered.results.get(s.span_id, {}).items()
                     if r.score is not None and specs[name].kind != "human")
    if not scored:
        return None
    return min(scored.items(), key=lambda kv: (-kv[1], kv[0]))[0]
