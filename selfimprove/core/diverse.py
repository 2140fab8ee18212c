"""Pick a maximally varied subset of texts: TF-IDF vectors, k-means++ clustering, one representative per cluster.

The seeds ask to "sample through distinct groupings in clustered embeddings for maximum variability". Without an
embeddings endpoint, TF-IDF over word unigrams and bigrams (sublinear tf, smoothed idf, L2-normalised rows) is the
offline stand-in. Clustering is k-means++ seeding (which already spreads the centres out) refined by a few Lloyd
iterations on cosine geometry; each cluster contributes the member nearest its centre. Pure and deterministic
for a seed: numpy's Generator, no global random state.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in pairwise(words)]


def tfidf_matrix(texts: Sequence[str], max_features: int = 8192) -> Any:
    """Rows: L2-normalised TF-IDF vectors (a scipy CSR matrix, n x vocabulary, float64). The vocabulary keeps
    the `max_features` terms found in most texts (ties by term), so memory stays bounded."""
    import numpy as np
    from scipy import sparse

    counts = [Counter(tokens(t)) for t in texts]
    df = Counter(term for c in counts for term in c)
    vocab = sorted(df, key=lambda term: (-df[term], term))[:max_features]
    index = {term: i for i, term in enumerate(vocab)}
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab])
    rows, cols, vals = [], [], []
    for row, c in enumerate(counts):
        for term, k in c.items():
            col = index.get(term)
            if col is not None:
                rows.append(row)
                cols.append(col)
                vals.append((1.0 + math.log(k)) * idf[col])
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)), dtype=np.float64)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norms == 0, 1.0, norms)) @ matrix


def _sq_dist(x: Any, x2: Any, c: Any) -> Any:
    """Squared distances (n x k) between the rows of sparse `x` (squared norms `x2`) and dense centres `c`."""
    import numpy as np

    return np.maximum(x2[:, None] - 2 * np.asarray(x @ c.T) + (c ** 2).sum(axis=1)[None, :], 0.0)


def kmeans_pp(x: Any, k: int, seed: int = 0, iterations: int = 10) -> tuple[Any, Any]:
    """(labels, centres) of k-means with k-means++ seeding over the rows of a sparse matrix; k <= rows."""
    import numpy as np
    from scipy import sparse

    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rng = np.random.default_rng(seed)
    x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    picks = [int(rng.integers(n))]
    d2 = _sq_dist(x, x2, x[picks[0]].toarray())[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        picks.append(pick)
        d2 = np.minimum(d2, _sq_dist(x, x2, x[pick].toarray())[:, 0])
    centres = x[picks].toarray()
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        new = _sq_dist(x, x2, centres).argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        assign = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        sizes = np.asarray(assign.sum(axis=1)).ravel()
        sums = np.asarray((assign @ x).todense())
        filled = sizes > 0
        centres[filled] = sums[filled] / sizes[filled, None]
    return labels, centres


def select_diverse(texts: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """Indexes of `k` texts, one from each of k clusters (the member nearest its centre), sorted; clusters left
    empty are filled with the texts farthest from everything chosen. k >= len(texts) returns every index."""
    import numpy as np

    n = len(texts)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    x = tfidf_matrix(texts)
    labels, centres = kmeans_pp(x, k, seed=seed)
    x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    dist = _sq_dist(x, x2, centres)
    chosen: list[int] = []
    for j in range(k):
        members = np.flatnonzero(labels == j)
        if len(members):
            chosen.append(int(members[int(dist[members, j].argmin())]))
    if len(chosen) < k:
        taken = set(chosen)
        d2 = _sq_dist(x, x2, x[chosen].toarray()).min(axis=1) if chosen else np.ones(n)
        for i in np.argsort(-d2, kind="stable"):
            if len(chosen) == k:
                break
            if int(i) not in taken:
                chosen.append(int(i))
                taken.add(int(i))
    return sorted(chosen)
