"""The pure split-by-trace and diverse-subset logic (hypothesis property tests) and the filter chain."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfimprove.core.diverse import kmeans_pp, select_diverse, tfidf_matrix
from selfimprove.core.errors import UsageError
from selfimprove.core.filters import matches, parse_filter
from selfimprove.core.records import EvalResult
from selfimprove.core.split import SplitItem, split_by_trace


@st.composite
def traced_items(draw):
    n_traces = draw(st.integers(1, 40))
    items = []
    for t in range(n_traces):
        size = draw(st.integers(1, 4))
        score = draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0]), st.floats(0, 1)))
        for k in range(size):
            items.append(SplitItem(f"s{t}-{k}", f"trace-{t}", score))
    return items


@settings(max_examples=150, deadline=None)
@given(traced_items(), st.floats(0.05, 0.95), st.integers(0, 2**31))
def test_split_properties(items, test_size, seed):
    split = split_by_trace(items, test_size, seed)
    assert set(split) == {i.sample_id for i in items} and set(split.values()) <= {"train", "test"}
    by_trace: dict[str, set[str]] = {}
    for i in items:
        by_trace.setdefault(i.trace_id, set()).add(split[i.sample_id])
    assert all(len(sides) == 1 for sides in by_trace.values())  # no trace on both sides
    assert split_by_trace(list(reversed(items)), test_size, seed) == split  # order-free, deterministic
    n = len(items)
    largest = max(sum(1 for i in items if i.trace_id == t) for t in by_trace)
    test = sum(v == "test" for v in split.values())
    assert abs(test - test_size * n) <= largest  # within one trace of the target share
    if len(by_trace) >= 2:
        assert 0 < test < n


def test_split_is_stratified_by_score():
    items = [SplitItem(f"g{i}", f"tg{i}", 1.0) for i in range(50)] + \
        [SplitItem(f"b{i}", f"tb{i}", 0.0) for i in range(50)]
    split = split_by_trace(items, 0.3, seed=7)
    good = sum(split[f"g{i}"] == "test" for i in range(50))
    bad = sum(split[f"b{i}"] == "test" for i in range(50))
    assert (good, bad) == (15, 15)
    assert split != split_by_trace(items, 0.3, seed=8)  # the seed matters
    with pytest.raises(ValueError):
        split_by_trace(items, 1.0)


def test_diverse_picks_one_per_topic_and_is_seeded():
    topics = ["refund my order {}", "where is my parcel tracking {}", "cancel my subscription plan {}",
              "reset my account password {}", "invoice billing address change {}"]
    texts = [t.format(i) for t in topics for i in range(12)]
    picked = select_diverse(texts, 5, seed=3)
    assert sorted({i // 12 for i in picked}) == [0, 1, 2, 3, 4]  # every topic, once
    assert picked == select_diverse(texts, 5, seed=3)
    assert select_diverse(texts, 100) == list(range(len(texts)))
    assert len(select_diverse(texts, 17, seed=1)) == 17
    x = tfidf_matrix(["a b", "a b", "c"])
    labels, _ = kmeans_pp(x, 2, seed=0)
    assert labels[0] == labels[1] != labels[2]


def test_filters():
    fields = {"model": "sim-small", "policy_digest": "sha256:abcdef", "metadata": {"tenant": {"id": "acme"}, "n": 3},
              "start_time": datetime(2024, 5, 2, tzinfo=UTC),
              "evals": {"correctness": EvalResult(label="incorrect", score=0.0)}}
    yes = ["model=sim-small", "policy=abc", "policy=sha256:abcd", "since=2024-05-01", "until=2024-05-03",
           "score.correctness<0.5", "label.correctness=incorrect", "metadata.tenant.id=acme", "metadata.n=3",
           "model~small", "score.helpfulness!=1"]
    no = ["model=sim-large", "policy=abd", "since=2024-05-03", "score.correctness>=0.5", "score.helpfulness<1",
          "metadata.tenant.id=other"]
    assert [f for f in yes if not matches(parse_filter(f), fields)] == []
    assert [f for f in no if matches(parse_filter(f), fields)] == []
    for bad in ["colour=red", "score.x<high", "since=yesterday", "no operator"]:
        with pytest.raises(UsageError):
            parse_filter(bad)
