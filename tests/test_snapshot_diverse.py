"""`snapshot --diverse` with `[split.embeddings]`: the simulator's embeddings over real HTTP through the openai SDK,
clustered in core; the run's call cache makes a re-run free; a failing endpoint falls back to TF-IDF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.span_rows import span_row, workspace, write_spans
from scipy import sparse

from selfimprove.core.diverse import normalise_rows, select_diverse_rows
from selfimprove.dataset.table import read_samples
from selfimprove.sim import start_server
from selfimprove.stages.pull import pull
from selfimprove.stages.snapshot import snapshot

TOPICS = [
    "refund the payment for my broken kettle {v}",
    "where is my parcel tracking number courier {v}",
    "cancel my monthly subscription plan renewal {v}",
    "reset my account password login locked {v}",
    "change the invoice billing address vat {v}",
]
VARIANTS = ["today", "asap", "thanks", "urgent", "please", "again", "now", "soon"]
PER_TOPIC = len(VARIANTS)


def _topic(text: str) -> int:
    return next(i for i, t in enumerate(TOPICS) if text.startswith(t.split("{")[0]))


@pytest.fixture(scope="module")
def sim():
    with start_server("support", seed=0) as s:
        yield s


def _calls(sim) -> int:
    return sim.stats()["by_endpoint"].get("/v1/embeddings", 0)


def _workspace(root: Path, embeddings: str | None) -> Path:
    """40 calls, topic by topic in span-id (input) order: spans 0-7 are topic 0, 8-15 topic 1, ..."""
    rows = [span_row(i, user=TOPICS[i // PER_TOPIC].format(v=VARIANTS[i % PER_TOPIC]))
            for i in range(len(TOPICS) * PER_TOPIC)]
    extra = "" if embeddings is None else f"[split.embeddings]\n{embeddings}"
    workspace(root, write_spans(root / "spans.jsonl", rows), extra=extra)
    pull(root=root, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    return root


def _embeddings_config(base_url: str, model: str = "sim-embed", retries: int = 0) -> str:
    return f'base_url = "{base_url}"\nmodel = "{model}"\nmax_retries = {retries}\n'


def _picked(result) -> list[str]:
    return sorted(s.sample_id for s in read_samples(f"{result.run_path}/dataset.parquet"))


def _topics(result) -> list[int]:
    return sorted(_topic(s.history[-1].content) for s in read_samples(f"{result.run_path}/dataset.parquet"))


def test_embeddings_pick_one_sample_per_topic_and_a_rerun_pays_nothing(sim, tmp_path):
    root = _workspace(tmp_path, _embeddings_config(sim.base_url))
    before = _calls(sim)
    r = snapshot(root=root, max_samples=5, diverse=True, seed=0)
    assert _calls(sim) - before == 1  # 40 inputs in one batch
    assert r.diverse_method == "embeddings" and not [w for w in r.warnings if "diverse" in w]
    assert r.counts["diverse.embeddings"] == 5 and r.counts["diverse.tfidf"] == 0
    assert r.counts["samples"] == 5 and r.counts["dropped.max_samples"] == 35
    assert _topics(r) == [0, 1, 2, 3, 4]  # maximally varied: every topic once
    in_order = [f"{i:016x}" for i in range(5)]  # the first five inputs: all topic 0
    assert _picked(r) != in_order
    assert r.embedding_calls == {"calls": 1, "cache_hits": 0, "prompt_tokens": r.embedding_calls["prompt_tokens"]}
    assert r.embedding_calls["prompt_tokens"] > 0
    assert any("embeddings (sim-embed) clusters" in n for n in r.notes)
    assert "embeddings (sim-embed) clusters" in Path(r.run_path, "snapshot.md").read_text()
    ckpt = json.loads(Path(r.run_path, "checkpoint.json").read_text())
    assert ckpt["counts"]["diverse.embeddings"] == 5
    assert len(list(Path(r.run_path, "cache", "llm").rglob("*.json"))) == 1

    # the same settings: the stage is reused (nothing recomputed, nothing sent)
    reused = snapshot(root=root, max_samples=5, diverse=True, seed=0)
    assert reused.reused and reused.diverse_method == "embeddings" and _calls(sim) - before == 1
    # --force recomputes: every embedding comes from the run's call cache, the same subset is picked
    forced = snapshot(root=root, max_samples=5, diverse=True, seed=0, force=True)
    assert not forced.reused and _calls(sim) - before == 1
    assert forced.embedding_calls == {"calls": 0, "cache_hits": 1, "prompt_tokens": 0}
    assert _picked(forced) == _picked(r) and forced.counts == r.counts
    # another embeddings model is another stage key (and other vectors): it is asked
    other = snapshot(root=root, max_samples=5, diverse=True, seed=0,
                     overrides=["split.embeddings.model=sim-embed-2"])
    assert not other.reused and _calls(sim) - before == 2 and other.diverse_method == "embeddings"


def test_without_an_endpoint_tfidf_needs_no_network(sim, tmp_path):
    root = _workspace(tmp_path, None)
    before = sim.stats()["requests"]
    r = snapshot(root=root, max_samples=5, diverse=True, seed=0)
    assert sim.stats()["requests"] == before
    assert r.diverse_method == "tfidf" and r.counts["diverse.tfidf"] == 5 and r.embedding_calls is None
    assert not [w for w in r.warnings if "diverse" in w] and any("TF-IDF clusters" in n for n in r.notes)
    assert _topics(r) == [0, 1, 2, 3, 4]
    plain = snapshot(root=root, max_samples=5, seed=0)  # not --diverse: no method recorded
    assert plain.diverse_method is None and "diverse.tfidf" not in plain.counts


@pytest.mark.parametrize("failure", ["http_500", "missing_key"])
def test_a_failing_endpoint_falls_back_to_tfidf_with_a_warning(tmp_path, monkeypatch, failure):
    if failure == "http_500":
        server = start_server("support", seed=0, error_rate=1.0)
        config = _embeddings_config(server.base_url, retries=1)
    else:  # a remote endpoint whose key variable is unset: nothing is sent
        server = None
        monkeypatch.delenv("SELFIMPROVE_TEST_EMBED_KEY", raising=False)
        config = ('base_url = "https://embeddings.invalid/v1"\nmodel = "text-embedding-3-small"\n'
                  'api_key_env = "SELFIMPROVE_TEST_EMBED_KEY"\n')
    try:
        root = _workspace(tmp_path, config)
        r = snapshot(root=root, max_samples=5, diverse=True, seed=0)
        if server is not None:
            assert server.stats()["by_status"] == {"500": 2}  # one request, one retry, then the fallback
            assert r.embedding_calls == {"calls": 2, "cache_hits": 0, "prompt_tokens": 0}
    finally:
        if server is not None:
            server.stop()
    assert r.diverse_method == "tfidf"
    assert r.counts["diverse.tfidf"] == 5 and r.counts["diverse.embeddings"] == 0
    warning = next(w for w in r.warnings if w.startswith("--diverse: no embeddings"))
    assert ("HTTP 500" if failure == "http_500" else "SELFIMPROVE_TEST_EMBED_KEY is not set") in warning
    assert "TF-IDF" in warning and "--force" in warning
    assert warning in Path(r.run_path, "snapshot.md").read_text()
    assert _topics(r) == [0, 1, 2, 3, 4]
    assert not list(Path(r.run_path).glob("cache/llm/??/*.json"))  # failures are never cached


def _topic_vectors():
    from selfimprove.sim.embeddings import embed_text

    return np.array([embed_text(t.format(v=v)) for t in TOPICS for v in VARIANTS])


def test_core_clusters_a_dense_matrix_like_its_sparse_twin():
    x = _topic_vectors()
    for seed in range(5):
        assert select_diverse_rows(x, 5, seed) == select_diverse_rows(sparse.csr_matrix(x), 5, seed)
    assert select_diverse_rows(x, 40) == list(range(40)) and select_diverse_rows(x, 0) == []
    assert len(select_diverse_rows(x, 13, seed=2)) == 13


def test_greedy_seeding_finds_every_topic_for_almost_every_seed():
    """Eight near-duplicates per topic: single-draw k-means++ left a topic out for 39 of 200 seeds (measured on
    this data before the greedy seeding); the best of 2 + ln(k) draws leaves one out for 4 of 200."""
    x = _topic_vectors()
    found = sum(sorted({i // PER_TOPIC for i in select_diverse_rows(x, 5, seed)}) == [0, 1, 2, 3, 4]
                for seed in range(50))
    assert found >= 47


def test_normalise_rows():
    out = normalise_rows([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    for bad in ([1.0, 2.0], [[1.0, float("nan")]], [[float("inf"), 0.0]]):
        with pytest.raises(ValueError):
            normalise_rows(bad)


def test_cli_snapshot_diverse_json_names_the_method(sim, tmp_path):
    from typer.testing import CliRunner

    from selfimprove.cli.app import app

    root = _workspace(tmp_path, _embeddings_config(sim.base_url))
    out = CliRunner().invoke(app, ["snapshot", "--root", str(root), "--max-samples", "5", "--diverse", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["diverse_method"] == "embeddings" and doc["counts"]["diverse.embeddings"] == 5
    assert doc["embedding_calls"]["calls"] == 1
