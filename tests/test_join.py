"""Joining annotations onto LLM spans across a span tree (core/join.py), on hand-made traces."""

from __future__ import annotations

from selfimprove.core.join import Node, Selector, join_annotations
from selfimprove.core.records import EvalResult

# trace t1: root (AGENT) -> chain (CHAIN) -> llm1, llm2 (two LLM calls under one chain)
# trace t2: root2 (AGENT) -> chain2 (CHAIN) -> llm3
# trace t3: llm4 alone (its own root)
NODES = {n.span_id: n for n in [
    Node("root", None, "t1", "agent"), Node("chain", "root", "t1", "chain"),
    Node("llm1", "chain", "t1", "ChatCompletion", llm=True, target=True, order=(1,), metadata={"step": "draft"}),
    Node("llm2", "chain", "t1", "ChatCompletion", llm=True, target=True, order=(2,), metadata={"step": "answer"}),
    Node("root2", None, "t2", "agent"), Node("chain2", "root2", "t2", "chain"),
    Node("llm3", "chain2", "t2", "ChatCompletion", llm=True, target=True, order=(3,)),
    Node("llm4", None, "t3", "ChatCompletion", llm=True, target=True, order=(4,)),
    Node("late", "chain2", "t2", "ChatCompletion", llm=True, target=False, order=(9,)),  # outside the window
]}


def r(label):
    return EvalResult(label=label, score=1.0 if label == "good" else 0.0)


def test_auto_takes_the_own_span_else_the_nearest_annotated_ancestor():
    results = {"llm4": {"q": r("good")}, "chain2": {"q": r("bad")}, "root2": {"q": r("good")},
               "root": {"q": r("bad")}}
    joined = join_annotations(NODES, results)
    assert joined.results == {"llm4": {"q": r("good")}, "llm3": {"q": r("bad")}, "llm2": {"q": r("bad")}}
    assert joined.ways == {"q": {"parent": 1, "root": 1, "span": 1}}
    assert joined.unjoined == {"covered_by_closer": 1}  # root2's verdict: chain2 is closer to llm3
    assert joined.ambiguous == {"q": 1}  # root covers llm1 and llm2: the last one got it


def test_modes_restrict_where_an_annotation_may_sit():
    results = {"llm3": {"q": r("good")}, "chain2": {"q": r("bad")}, "root2": {"p": r("good")},
               "chain": {"p": r("bad"), "s": r("bad")}, "llm4": {"s": r("good")}}
    joined = join_annotations(NODES, results, modes={"q": "parent", "p": "root", "s": "span"})
    assert joined.results["llm3"] == {"q": r("bad"), "p": r("good")}  # own 'q' ignored: the eval joins on parents
    assert joined.results["llm4"] == {"s": r("good")}
    assert "p" not in joined.results.get("llm2", {}) and "s" not in joined.results.get("llm2", {})
    assert joined.unjoined == {"join_mode": 2, "not_a_root": 1}  # llm3's own q, chain's s; chain is no root


def test_the_selector_picks_by_metadata_and_first_or_last():
    results = {"chain": {"q": r("bad")}}
    assert set(join_annotations(NODES, results).results) == {"llm2"}  # default: the last by start time
    assert set(join_annotations(NODES, results, selector=Selector(pick="first")).results) == {"llm1"}
    chosen = join_annotations(NODES, results, selector=Selector(metadata={"step": "draft"}))
    assert set(chosen.results) == {"llm1"} and chosen.ambiguous == {"q": 1}


def test_bad_input_is_counted_by_reason():
    results = {"ghost": {"q": r("good")}, "late": {"q": r("bad")}, "llm4": {"q": r("good")}}
    joined = join_annotations(NODES, results)
    assert joined.results == {"llm4": {"q": r("good")}}
    assert joined.unjoined == {"outside_window": 1, "unknown_span": 1}
    assert joined.examples["unknown_span"] == "q on span ghost"


def test_trace_annotations_join_in_trace_mode_and_as_the_last_resort_of_auto():
    results = {"trace:t2": {"q": r("good"), "p": r("bad")}, "chain2": {"q": r("bad")},
               "trace:t1": {"q": r("bad")}, "trace:t9": {"q": r("good")}}
    auto = join_annotations(NODES, results)
    assert auto.results == {"llm3": {"q": r("bad"), "p": r("bad")}, "llm2": {"q": r("bad")}}
    assert auto.ways == {"p": {"trace": 1}, "q": {"parent": 1, "trace": 1}}
    assert auto.unjoined == {"covered_by_closer": 1, "no_llm_span_below": 1}  # chain2 beats trace t2; t9: none
    assert auto.ambiguous == {"q": 1}  # trace t1 holds llm1 and llm2
    trace = join_annotations(NODES, results, default="trace")
    assert trace.results["llm3"] == {"q": r("good"), "p": r("bad")}  # only the trace's own verdicts
    assert trace.unjoined == {"join_mode": 1, "no_llm_span_below": 1}


def test_an_ancestor_verdict_is_never_handed_to_another_span_when_the_picked_one_has_its_own():
    results = {"llm2": {"q": r("good")}, "chain": {"q": r("bad")}}
    joined = join_annotations(NODES, results)
    assert joined.results == {"llm2": {"q": r("good")}}  # llm1 does not inherit the chain's verdict
    assert joined.unjoined == {"covered_by_closer": 1}
    first = join_annotations(NODES, results, selector=Selector(pick="first"))
    assert first.results == {"llm2": {"q": r("good")}, "llm1": {"q": r("bad")}}  # the rule says llm1: it gets it
