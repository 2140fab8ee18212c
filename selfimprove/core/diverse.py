"""Pick a maximally varied subset: vectors, k-means++ clustering, one representative per cluster.

The seeds ask to "sample through distinct groupings in clustered embeddings for maximum variability". The
vectors are either embeddings fetched by the caller (a dense numpy matrix: `select_diverse_rows(normalise_rows(m),
k)`) or, with no embeddings endpoint, TF-IDF over word unigrams and bigrams (sublinear tf, smoothed idf,
L2-normalised rows; `select_diverse(texts, k)`), the offline stand-in. Clustering is k-means++ seeding (which
already spreads the centres out) refined by a few Lloyd iterations on cosine geometry (unit rows); each cluster
contributes the member nearest its centre. Pure and deterministic for a seed: numpy's Generator, no global random
state; no I/O (fetching embeddings is the stage's job).
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


def normalise_rows(matrix: Any) -> Any:
    """A dense float64 copy of `matrix` (n x d, e.g. embeddings) with L2-normalised rows (zero rows stay zero),
    so that squared distances are cosine distances. Raises ValueError for a non-2-D or non-finite matrix."""
    import numpy as np

    x = np.array(matrix, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"expected a finite 2-D matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    return x / np.where(norms == 0, 1.0, norms)[:, None]


def _dense(m: Any) -> Any:
    import numpy as np

    return m.toarray() if hasattr(m, "toarray") else np.asarray(m)


def _sq_norms(x: Any) -> Any:
    import numpy as np

    return np.asarray(x.multiply(x).sum(axis=1)).ravel() if hasattr(x, "multiply") else (x * x).sum(axis=1)


def _sq_dist(x: Any, x2: Any, c: Any) -> Any:
    """Squared distances (n x k) between the rows of `x` (sparse or dense; squared norms `x2`) and dense
    centres `c`."""
    import numpy as np

    return np.maximum(x2[:, None] - 2 * np.asarray(x @ c.T) + (c ** 2).sum(axis=1)[None, :], 0.0)


def kmeans_pp(x: Any, k: int, seed: int = 0, iterations: int = 10) -> tuple[Any, Any]:
    """(labels, centres) of k-means with greedy k-means++ seeding over the rows of a matrix (scipy sparse or a
    dense numpy array); k <= rows. Greedy (as scikit-learn's default): each new centre is the best of
    2 + ln(k) rows drawn by squared distance, the one that lowers the total squared distance most, which makes
    two centres in one tight group (and a group left without one) much rarer than a single draw does."""
    import numpy as np
    from scipy import sparse

    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rng = np.random.default_rng(seed)
    x2 = _sq_norms(x)
    picks = [int(rng.integers(n))]
    d2 = _sq_dist(x, x2, _dense(x[[picks[0]]]))[:, 0]
    trials = 2 + int(math.log(k))
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # every row is already a centre
            pick = int(rng.integers(n))
            d2 = np.minimum(d2, _sq_dist(x, x2, _dense(x[[pick]]))[:, 0])
        else:
            candidates = rng.choice(n, size=trials, p=d2 / total)
            after = np.minimum(d2[:, None], _sq_dist(x, x2, _dense(x[candidates])))
            best = int(after.sum(axis=0).argmin())
            pick, d2 = int(candidates[best]), after[:, best]
        picks.append(pick)
    centres = _dense(x[picks]).astype(np.float64)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(iterations):
        new = _sq_dist(x, x2, centres).argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        assign = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        sizes = np.asarray(assign.sum(axis=1)).ravel()
        sums = _dense(assign @ x)
        filled = sizes > 0
        centres[filled] = sums[filled] / sizes[filled, None]
    return labels, centres


def select_diverse(texts: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """Indexes of `k` texts picked from TF-IDF clusters (see `select_diverse_rows`)."""
    n = len(texts)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    return select_diverse_rows(tfidf_matrix(texts), k, seed)


def select_diverse_rows(x: Any, k: int, seed: int = 0) -> list[int]:
    """Indexes of `k` rows of `x` (scipy sparse or dense numpy, rows L2-normalised for cosine geometry), one
    from each of k clusters (the member nearest its centre), sorted; clusters left empty are filled with the rows
    farthest from everything chosen. k >= rows returns every index."""
    import numpy as np

    n = x.shape[0]
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    labels, centres = kmeans_pp(x, k, seed=seed)
    x2 = _sq_norms(x)
    dist = _sq_dist(x, x2, centres)
    chosen: list[int] = []
    for j in range(k):
        members = np.flatnonzero(labels == j)
        if len(members):
            chosen.append(int(members[int(dist[members, j].argmin())]))
    if len(chosen) < k:
        taken = set(chosen)
        d2 = _sq_dist(x, x2, _dense(x[chosen])).min(axis=1) if chosen else np.ones(n)
        for i in np.argsort(-d2, kind="stable"):
            if len(chosen) == k:
                break
            if int(i) not in taken:
                chosen.append(int(i))
                taken.add(int(i))
    return sorted(chosen)
