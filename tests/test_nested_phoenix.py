"""Evals logged on a chain parent and on the trace root, and people's reviews, end to end with the real Phoenix:
the simulator's traffic generator traces each call under an AGENT root and a CHAIN parent (OpenInference),
judges it with real phoenix-evals evaluators and logs the evals on the parent (or the root), and simulated
reviewers label a share of the same spans (annotator_kind HUMAN). pull fetches the traces' other spans (the tree)
and their annotations; snapshot joins every verdict to the LLM span under it and measures judge-human agreement,
exactly as many reviews and disagreements as the generator made."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures.traffic import phoenix_ws

from selfimprove.dataset.table import read_samples
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot

pytestmark = pytest.mark.phoenix


@pytest.fixture(scope="module")
def chained(phoenix, tmp_path_factory):
    """16 calls under AGENT root + CHAIN parent spans, evals logged on the parents, 3/4 of them reviewed by
    simulated people who disagree with the judge on a seeded quarter; pulled into a workspace."""
    from selfimprove.sim import start_server
    from selfimprove.sim.traffic import make_traffic

    server = start_server("support", seed=13)
    try:
        made = make_traffic("support", 16, phoenix_url=phoenix.url, project="t-nested-parent",
                            sim_base_url=server.base_url, seed=3, chain=True, eval_on="parent", humans=0.75,
                            human_flip=0.25)
    finally:
        server.stop()
    root = phoenix_ws(tmp_path_factory.mktemp("ws"), phoenix, "t-nested-parent")
    return made, root, pull(root=root, since="2000-01-01T00:00Z")


def test_pull_keeps_the_tree_and_the_annotations_on_parents(chained):
    made, root, pulled = chained
    run = root / "runs" / "support" / pulled.run
    spans = pd.read_parquet(run / "raw/spans.parquet")
    tree = pd.read_parquet(run / "raw/tree.parquet")
    assert set(spans["span_id"]) == set(made["span_ids"]) and set(spans["span_kind"]) == {"LLM"}
    parents = {p["parent"] for p in made["parents"].values()}
    roots = {p["root"] for p in made["parents"].values()}
    assert set(tree["span_id"]) == parents | roots
    assert set(tree.loc[tree["span_id"].isin(parents), "span_kind"]) == {"CHAIN"}
    assert tree.set_index("span_id").loc[sorted(parents), "parent_id"].isin(roots).all()
    ann = pd.read_parquet(run / "raw/annotations.parquet")
    assert set(ann["span_id"]) <= parents and len(ann) == made["annotations"]


def test_evals_on_parents_join_and_people_agree_exactly_as_made(chained):
    made, root, pulled = chained
    result = snapshot(root=root)
    evals = sorted(made["scores"])
    assert set(result.joins) == set(evals) | {f"human.{e}" for e in made["reviews"]}
    for name in evals:
        assert result.joins[name] == {"parent": made["spans"]}  # every judged call, through its parent
    assert result.unjoined == {} and result.ambiguous == {}
    samples = read_samples(root / "runs" / "support" / pulled.run / "dataset.parquet")
    assert all(set(evals) <= set(s.evals) for s in samples)
    by_judge = {a.judge: a for a in result.agreement}
    for name, made_reviews in made["reviews"].items():
        a = by_judge[name]
        assert (a.n, a.n - a.agree) == (made_reviews["reviewed"], made_reviews["disagree"])
        assert a.percent == round(a.agree / a.n, 6)
    assert sum(r["disagree"] for r in made["reviews"].values()) > 0  # the case has disagreements to find


def test_root_only_join_ignores_the_parents(chained):
    made, root, _ = chained
    result = snapshot(root=root, overrides=['join.default="root"'], force=True)
    assert result.joins == {} and result.unjoined == {"not_a_root": made["annotations"]}
    assert result.primary_eval is None and any("reached no LLM span" in w for w in result.warnings)


def test_trace_annotations_are_pulled_and_join_through_the_trace(phoenix, tmp_path):
    from selfimprove.sim import start_server
    from selfimprove.sim.traffic import make_traffic

    server = start_server("support", seed=17)
    try:
        made = make_traffic("support", 6, phoenix_url=phoenix.url, project="t-nested-trace",
                            sim_base_url=server.base_url, seed=5, chain=True, eval_on="trace")
    finally:
        server.stop()
    root = phoenix_ws(tmp_path, phoenix, "t-nested-trace")
    pulled = pull(root=root, since="2000-01-01T00:00Z")
    ann = pd.read_parquet(root / "runs" / "support" / pulled.run / "raw/annotations.parquet")
    assert set(ann["span_id"]) == {"trace:" + p["trace"] for p in made["parents"].values()}
    result = snapshot(root=root)
    assert result.joins == {name: {"trace": made["spans"]} for name in made["scores"]}
    assert result.unjoined == {}
