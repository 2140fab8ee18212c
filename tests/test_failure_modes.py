"""Failure modes, not evals: on the simulator's data, the taxonomy separates the distinct failure kinds the world
planted (ground truth from selfimprove.sim.truth, which only tests may read) into clusters that are each >= 80%
pure, with the configured embeddings endpoint (the simulator's) and with the offline TF-IDF fallback."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sim_helpers import judge_rows, run_policy

from selfimprove.optimizers.base import ScoredSample, Verdict
from selfimprove.optimizers.taxonomy import failure_taxonomy, statements
from selfimprove.sim import default_policy, start_server, world_evals
from selfimprove.sim.truth import broken_rules


def _specs(world: str):
    from selfimprove.core.records import EvalSpec

    return tuple(EvalSpec(name=e["name"], template=e["template"], choices=e["choices"]) for e in world_evals(world))


def _judged(world: str, n: int):
    with start_server(world, seed=7) as s:
        rows = run_policy(s.base_url, world, default_policy(world)["system_prompt"], n=n, seed=3)
        judged = judge_rows(s.base_url, world, rows)
        scored = [ScoredSample(f"s{i:03d}", (), r["output"], {
            name: Verdict(score=col[i]["score"], label=col[i]["label"], explanation=col[i]["explanation"])
            for name, col in judged.items()}) for i, r in enumerate(rows)]
        yield rows, scored, s.base_url


@pytest.fixture(scope="module", params=["support", "support_hard"])
def judged(request):
    yield from _judged(request.param, 120)


def _purity(world: str, rows, clusters) -> list[tuple[str, float, str]]:
    inputs = {f"s{i:03d}": r for i, r in enumerate(rows)}
    out = []
    for c in clusters:
        truth = [broken_rules(world, c.eval, inputs[sid]["input"], inputs[sid]["output"]) for sid in c.sample_ids]
        counts = Counter(k for t in truth for k in t) + Counter("(judge error)" for t in truth if not t)
        kind, _ = counts.most_common(1)[0]  # a verdict no rule explains is the judge's noise: a mode of its own
        out.append((kind, sum(kind in t if t else kind == "(judge error)" for t in truth) / len(truth), c.label))
    return out


def _check(world: str, rows, scored, clusters):
    kinds = {k for i, r in enumerate(rows) for spec in _specs(world)
             for k in broken_rules(world, spec.name, r["input"], r["output"])}
    purity = _purity(world, rows, [c for c in clusters if c.count >= 2])
    assert all(p >= 0.8 for _, p, _ in purity), purity
    found = {k for k, _, _ in purity}
    assert kinds <= found, (sorted(kinds), purity)  # every planted kind seen here has a cluster of its own


def test_failure_modes_are_pure_with_the_tfidf_fallback(judged):
    rows, scored, _ = judged
    world = "support_hard" if any("Brightline" in r["output"] for r in rows) else "support"
    clusters = failure_taxonomy(scored, _specs(world))
    _check(world, rows, scored, clusters)
    shuffled = random.Random(1).sample(scored, len(scored))
    assert failure_taxonomy(shuffled, _specs(world)) == clusters  # the order of the rows does not matter


def test_failure_modes_are_pure_with_the_embeddings_endpoint(judged):
    from selfimprove.llm.embeddings import OpenAIEmbeddings

    rows, scored, base_url = judged
    world = "support_hard" if any("Brightline" in r["output"] for r in rows) else "support"
    with OpenAIEmbeddings(base_url, model="sim-embed") as emb:
        clusters = failure_taxonomy(scored, _specs(world), embed=emb.embed)
        assert emb.ledger.snapshot().calls >= 1
    _check(world, rows, scored, clusters)


def test_statements_split_sentences_but_not_quotes_and_keep_short_remarks_with_their_sentence():
    text = ("The reply promises a refund ('I promise. It will come tomorrow.') which is not allowed. "
            "Wrong. The customer wrote in French but got English.")
    assert statements(text) == [("The reply promises a refund ('I promise. It will come tomorrow.') which is not "
                                "allowed. Wrong."), "The customer wrote in French but got English."]
