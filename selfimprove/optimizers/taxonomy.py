"""Failure taxonomy: cluster failing samples by their judges' explanations (the seeds' targeted patches).

Pure and deterministic: explanations become TF-IDF vectors of content words (and word pairs); single-link
agglomeration joins two failures when their cosine similarity reaches `threshold`. Each cluster is reported with its
eval, its count, its top terms and a representative explanation; the update can target one cluster (`focus`).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from selfimprove.core.canonical import digest, short
from selfimprove.core.records import EvalSpec
from selfimprove.optimizers.base import ScoredSample

_STOP = frozenset(["a", "an", "the", "and", "or", "but", "if", "then", "else", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "there", "here", "which", "who", "whom", "what", "when", "where", "why", "how", "not", "no", "nor", "do", "does", "did", "done", "has", "have", "had", "having", "can", "could", "should", "would", "will", "shall", "may", "might", "must", "i", "you", "he", "she", "we", "they", "them", "their", "our", "your", "my", "me", "us", "his", "her", "reply", "output", "response", "answer", "message", "customer", "user", "model", "assistant", "text", "because", "so", "than", "too", "very", "also", "only", "just", "any", "all", "each", "every", "some", "such", "own", "same", "other", "more", "most", "into", "about", "over", "under", "again", "further", "once", "both", "few", "much"])
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]+")


@dataclass(frozen=True)
class FailureCluster:
    id: str
    eval: str
    count: int
    terms: tuple[str, ...]
    example: str
    sample_ids: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"id": self.id, "eval": self.eval, "count": self.count, "terms": list(self.terms),
                "example": self.example, "sample_ids": list(self.sample_ids)}


def _features(text: str) -> list[str]:
    words = [w.lower().strip("'-") for w in _WORD.findall(text)]
    words = [w for w in words if w not in _STOP and len(w) > 2]
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


def _cos(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(x * b.get(t, 0.0) for t, x in a.items())


def cluster_explanations(items: Sequence[tuple[str, str]], threshold: float = 0.3) -> list[list[int]]:
    """Clusters (lists of indices into `items`, a list of (sample_id, explanation)), largest first."""
    vecs = _tfidf([_features(text) for _, text in items])
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if find(i) != find(j) and _cos(vecs[i], vecs[j]) >= threshold:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def failure_taxonomy(rows: Sequence[ScoredSample], evals: Sequence[EvalSpec],
                     threshold: float = 0.3, min_count: int = 1) -> list[FailureCluster]:
    """Clusters of failing samples per eval, by explanation; largest first. A sample failing two evals counts in
    a cluster of each."""
    clusters: list[FailureCluster] = []
    rows = sorted(rows, key=lambda r: r.sample_id)
    for spec in evals:
        items = []
        for row in rows:
            if spec.name in row.failed_evals([spec]):
                v = row.verdicts.get(spec.name)
                text = (v.explanation if v and v.explanation else row.error) or "no explanation given"
                items.append((row.sample_id, text))
        if not items:
            continue
        vecs = _tfidf([_features(t) for _, t in items])
        for group in cluster_explanations(items, threshold):
            if len(group) < min_count:
                continue
            weight: Counter = Counter()
            for i in group:
                weight.update({t: x for t, x in vecs[i].items() if " " not in t})
            terms = tuple(t for t, _ in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
            centre = max(group, key=lambda i: (sum(_cos(vecs[i], vecs[j]) for j in group), -i))
            ids = tuple(sorted(items[i][0] for i in group))
            clusters.append(FailureCluster(id="f-" + short(digest([spec.name, list(ids)]), 8), eval=spec.name,
                                           count=len(group), terms=terms, example=items[centre][1],
                                           sample_ids=ids))
    return sorted(clusters, key=lambda c: (-c.count, c.eval, c.id))
