"""Failure taxonomy: failure *modes*, not evals (the seeds' targeted patches).

A judge's explanation often names several problems of one output at once ("never mentions the order number ...
promises a refund date ..."), and names the case (an order number, a product, a quote of the reply) rather than
the rule. Clustering whole explanations then chains every failure of an eval into one cluster. So:

1. *units*: each failing verdict's explanation is split into its statements (sentences; a statement without
   content words stays with its neighbour), and case details are masked (quoted text, numbers, #ids);
2. *vectors*: the units' embeddings when the caller gives an `embed` function (the configured endpoint), else
   TF-IDF of content words and word pairs (the offline fallback);
3. *clustering*: average-linkage agglomeration on cosine distance (scipy), cut where the mean similarity between
   two groups falls below `threshold` (average linkage does not chain the way single linkage does);
4. a sample belongs to every cluster one of its statements fell into. Each cluster is summarised by its top
   terms, a label made of them, and its most central statement as the example.

Pure and deterministic (the order of the rows does not matter); the embed function is the only I/O, supplied by
the caller.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from selfimprove.core.canonical import digest, short
from selfimprove.core.records import EvalSpec
from selfimprove.optimizers.base import ScoredSample

STOPWORDS = frozenset(["a", "an", "the", "and", "or", "but", "if", "then", "else", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "there", "here", "which", "who", "whom", "what", "when", "where", "why", "how", "not", "no", "nor", "do", "does", "did", "done", "has", "have", "had", "having", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "i", "you", "he", "she", "we", "they", "them", "their", "our", "your", "my", "me", "us", "his", "her", "reply", "output", "response", "answer", "message", "customer", "user", "model", "assistant", "text", "because", "so", "than", "too", "very", "also", "only", "just", "any", "all", "each", "every", "some", "such", "own", "same", "other", "more", "most", "into", "about", "over", "under", "again", "further", "once", "both", "few", "much", "yet"])
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]+")
_QUOTED = re.compile(r"'[^'\n]{3,}?'(?=[\s).,;:]|$)|\"[^\"\n]{3,}?\"|“[^”\n]*”")
_NUMBER = re.compile(r"#?\d[\d.,:/-]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
MIN_CONTENT_WORDS = 3  # a shorter statement ("This is wrong.") joins the one before it
THRESHOLD = 0.15  # mean cosine similarity below which two groups stay apart: TF-IDF vectors ...
EMBED_THRESHOLD = 0.6  # ... and embeddings (measured on the simulator's worlds: tests/test_failure_modes.py)
Embed = Callable[[list[str]], Any]  # texts -> n x d matrix (the configured embeddings endpoint)


@dataclass(frozen=True)
class FailureCluster:
    id: str
    eval: str
    count: int
    terms: tuple[str, ...]
    example: str
    sample_ids: tuple[str, ...]
    label: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "eval": self.eval, "count": self.count, "label": self.label,
                "terms": list(self.terms), "example": self.example, "sample_ids": list(self.sample_ids)}


def mask(text: str) -> str:
    """The statement without its case details: quoted text and numbers (order ids, counts, amounts)."""
    return _NUMBER.sub(" ", _QUOTED.sub(" ", text))


def _content(text: str) -> list[str]:
    words = [w.lower().strip("'-") for w in _WORD.findall(mask(text))]
    return [w for w in words if w not in STOPWORDS and len(w) > 2]


def statements(explanation: str) -> list[str]:
    """The explanation's statements: sentences, a short one joined to the one before (quotes are not split)."""
    protected = _QUOTED.sub(lambda m: m.group(0).replace(". ", ".\0"), explanation.strip())
    out: list[str] = []
    for part in _SENTENCE.split(protected):
        part = part.replace(".\0", ". ").strip()
        if not part:
            continue
        if out and len(_content(part)) < MIN_CONTENT_WORDS:
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out or [explanation.strip() or "no explanation given"]


def _features(text: str) -> list[str]:
    words = _content(text)
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def _tfidf(docs: list[list[str]]) -> list[dict[str, float]]:
    df = Counter(t for d in docs for t in set(d))
    n = len(docs)
    vecs = []
    for d in docs:
        tf = Counter(d)
        v = {t: (1 + math.log(c)) * math.log((1 + n) / (1 + df[t]) + 1) for t, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        vecs.append({t: x / norm for t, x in v.items()})
    return vecs


def _matrix(vecs: list[dict[str, float]]) -> Any:
    import numpy as np

    vocab = {t: i for i, t in enumerate(sorted({t for v in vecs for t in v}))}
    m = np.zeros((len(vecs), max(1, len(vocab))))
    for r, v in enumerate(vecs):
        for t, x in v.items():
            m[r, vocab[t]] = x
    return m


def average_linkage(matrix: Any, threshold: float) -> list[int]:
    """A cluster number per row: average-linkage agglomeration on cosine distance, groups merged while their mean
    similarity is at least `threshold`."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    x = np.asarray(matrix, dtype=np.float64)
    if len(x) < 2:
        return [1] * len(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1.0, norms)
    dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    condensed = dist[np.triu_indices(len(x), k=1)]
    tree = linkage(condensed, method="average")
    return [int(c) for c in fcluster(tree, t=1.0 - threshold, criterion="distance")]


def cluster_explanations(items: Sequence[tuple[str, str]], threshold: float | None = None,
                         embed: Embed | None = None) -> list[list[int]]:
    """Clusters of statements (lists of indices into `items`, a list of (sample_id, statement)), largest first."""
    if not items:
        return []
    if threshold is None:
        threshold = THRESHOLD if embed is None else EMBED_THRESHOLD
    texts = [mask(text) for _, text in items]
    matrix = embed(texts) if embed is not None else _matrix(_tfidf([_features(t) for _, t in items]))
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(average_linkage(matrix, threshold)):
        groups.setdefault(c, []).append(i)
    return sorted(groups.values(), key=lambda g: (-len({items[i][0] for i in g}), items[g[0]][1], g[0]))


def failure_taxonomy(rows: Sequence[ScoredSample], evals: Sequence[EvalSpec], threshold: float | None = None,
                     min_count: int = 1, embed: Embed | None = None) -> list[FailureCluster]:
    """Failure modes per eval, largest first: clusters of the statements in the failing verdicts' explanations. A
    sample whose explanation names two problems counts in the cluster of each."""
    clusters: list[FailureCluster] = []
    for spec in evals:
        items = []
        for row in sorted(rows, key=lambda r: r.sample_id):
            if spec.name in row.failed_evals([spec]):
                v = row.verdicts.get(spec.name)
                text = (v.explanation if v and v.explanation else row.error) or "no explanation given"
                items.extend((row.sample_id, s) for s in statements(text))
        items = sorted(set(items))
        if not items:
            continue
        vecs = _tfidf([_features(t) for _, t in items])
        for group in cluster_explanations(items, threshold, embed):
            ids = tuple(sorted({items[i][0] for i in group}))
            if len(ids) < min_count:
                continue
            weight: Counter = Counter()
            for i in group:
                weight.update({t: x for t, x in vecs[i].items() if " " not in t})
            terms = tuple(t for t, _ in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
            centre = max(group, key=lambda i: (sum(_cos(vecs[i], vecs[j]) for j in group), -i))
            clusters.append(FailureCluster(id="f-" + short(digest([spec.name, list(ids), items[centre][1]]), 8),
                                           eval=spec.name, count=len(ids), terms=terms, example=items[centre][1],
                                           sample_ids=ids, label=f"{spec.name}: {', '.join(terms[:3])}"))
    return sorted(clusters, key=lambda c: (-c.count, c.eval, c.id))


def _cos(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(x * b.get(t, 0.0) for t, x in a.items())
