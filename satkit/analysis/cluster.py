"""Spectral clustering of a SAT matrix and TF-IDF keywords per cluster (paper 4.1, appendix D.3).

Algorithm (the paper's section 4.1 and appendix D.3; ``method="njw"`` adds Ng, Jordan & Weiss's row normalization):

1. Affinity ``A`` from the SAT matrix ``S``:

   * asymmetric input is symmetrized, ``A = (S + S^T) / 2``: the graph is
     undirected and ``eigh`` needs a symmetric matrix; for a symmetric SAT
     matrix this is a no-op, for a one-sided one it averages both directions.
   * negative values are clipped to 0. SAT = ln(max(eps_s, transfer %)) is
     negative only when fewer than 1 % of the attacks transfer (and eps_s < 1),
     i.e. the pair is as dissimilar as SAT can tell; an affinity must be
     non-negative, and "no edge" is the faithful reading. Shifting the whole
     matrix instead would add the same weight to every edge and blur blocks.
   * the diagonal is set to 0. SAT(A, A) is the largest value a model gets and
     is a self-loop: it says nothing about which *other* models a model is close
     to, only inflates every degree, and NJW define ``A_ii = 0``.

2. ``D = diag(row sums of A)``, normalized affinity ``N = D^-1/2 A D^-1/2``
   (the normalized Laplacian is ``L = I - N``; its smallest eigenvalues are
   ``1 -`` the largest of ``N``). Eigen-decomposition with ``numpy.linalg.eigh``.
3. The ``k`` eigenvectors of the ``k`` largest eigenvalues of ``N`` form
   ``X`` (n x k), the spectral features ``Y`` fed to k-means:

   * ``method="paper"`` (default): ``Y = X``, exactly the paper's description
     ("normalized Laplacian, then k-means on the k largest eigenvectors"). It
     does not normalize rows, so a model's distance from the origin (how
     strongly it belongs to the dominant directions) stays part of the geometry.
   * ``method="njw"``: rows of ``X`` normalized to unit length (Ng, Jordan &
     Weiss 2001, step 4), which projects every model onto the unit sphere and
     clusters by direction only.

   The two are different methods and can place a model differently
   (docs/analysis.md compares them on the digits zoo); the method is recorded
   in every clustering output (``method`` column) and in a study's ``study.json``.
4. k-means on ``Y``: scikit-learn ``KMeans(n_init=100, random_state=seed)``,
   which keeps the run with the best (lowest) inertia.

``k`` defaults to the eigengap choice: the ``k`` in ``2 .. max_k`` that
maximizes ``lambda_k - lambda_{k+1}`` of ``N`` (eigenvalues descending;
``k = 1`` is excluded because the first gap is always large when every pair has
some similarity, as SAT matrices do).

Invariance to the order of the models in the file: the computation runs on the
models sorted by name, and clusters are numbered 1, 2, ... in order of first
appearance in that sorted list (cluster 1 holds the alphabetically first model).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl

from satkit.analysis.plots import SUFFIX_FORMATS, new_figure, save_figure  # noqa: F401
from satkit.errors import ParameterError
from satkit.matrix.sat import check_sat_matrix
from satkit.settings import CLUSTER_METHOD

METHODS = ("paper", "njw")  # the default: satkit.settings.CLUSTER_METHOD



@dataclass
class ClusterResult:
    """Spectral clustering of ``names`` (rows in the order given by the caller)."""

    names: list[str]
    labels: np.ndarray  # (n,) cluster numbers 1..k, canonical (see module docstring)
    embedding: np.ndarray  # (n, k) spectral features Y fed to k-means (rows unit length with njw)
    eigenvalues: np.ndarray  # (n,) eigenvalues of D^-1/2 A D^-1/2, descending
    gaps: np.ndarray  # (n-1,) gaps[j] = eigenvalues[j] - eigenvalues[j+1]; choosing k uses gaps[k-1]
    k: int
    k_from_eigengap: bool  # True when k was chosen by the eigengap, False when given
    inertia: float  # k-means objective of the kept run
    n_negative_clipped: int  # off-diagonal affinity entries (after symmetrizing) clipped to 0
    symmetrized: bool  # input differed from its transpose by more than 1e-6
    method: str = CLUSTER_METHOD  # paper | njw (see the module docstring)

    def to_frame(self, coordinates: bool = True) -> pl.DataFrame:
        """One row per model: ``model``, ``cluster``, ``method`` and the spectral coordinates ``spec_1..spec_k``."""
        df = pl.DataFrame({"model": self.names, "cluster": self.labels.astype(np.int64), "method": [self.method] * len(self.names)})
        if coordinates:
            df = df.with_columns([pl.Series(f"spec_{j + 1}", self.embedding[:, j].astype(float)) for j in range(self.k)])
        return df

    def members(self) -> dict[int, list[str]]:
        """Cluster number -> model names (sorted)."""
        return {c: sorted(n for n, lab in zip(self.names, self.labels) if lab == c) for c in range(1, self.k + 1)}


# ----------------------------------------------------------------------------- checks


def _check_input(names: list[str], S: np.ndarray) -> np.ndarray:
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ParameterError(f"similarity matrix must be square, got shape {S.shape}")
    if S.shape[0] != len(names):
        raise ParameterError(f"similarity matrix is {S.shape[0]} x {S.shape[0]} but {len(names)} names were given")
    if len(set(names)) != len(names):
        raise ParameterError("duplicate model names; each model must appear once")
    if len(names) < 2:
        raise ParameterError(f"need at least 2 models to cluster, got {len(names)}")
    if not np.all(np.isfinite(S)):
        raise ParameterError("similarity matrix has NaN/infinite cells; every pair needs a finite similarity")
    return check_sat_matrix(names, S)


def check_seed(seed: int, option: str = "--seed") -> int:
    """A seed scikit-learn accepts (a whole number in [0, 2**32 - 1]), or a one-line ParameterError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ParameterError(f"{option} must be a whole number in [0, 2**32 - 1], got {seed!r}")
    return int(seed)


def affinity(S: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """SAT matrix -> affinity (symmetrized, negatives clipped, zero diagonal); see module docstring.

    Returns (A, number of clipped off-diagonal entries, whether it was symmetrized).
    """
    asymmetric = not np.allclose(S, S.T, rtol=0.0, atol=1e-6)
    A = (S + S.T) / 2.0
    np.fill_diagonal(A, 0.0)
    negative = A < 0
    A[negative] = 0.0
    return A, int(negative.sum()), asymmetric


# ----------------------------------------------------------------------------- spectral steps


def _normalized_affinity(A: np.ndarray, names: list[str]) -> np.ndarray:
    degree = A.sum(axis=1)
    isolated = [n for n, d in zip(names, degree) if d <= 0]
    if isolated:
        raise ParameterError(
            f"model(s) {', '.join(isolated[:5])} have no positive similarity to any other model; "
            "remove them from the matrix before clustering"
        )
    d = 1.0 / np.sqrt(degree)
    N = d[:, None] * A * d[None, :]
    return (N + N.T) / 2.0  # exact symmetry against rounding


def _eigen(N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending and matching eigenvectors, each column's sign fixed."""
    values, vectors = np.linalg.eigh(N)
    order = np.argsort(-values, kind="stable")
    values, vectors = values[order], vectors[:, order]
    # eigenvectors are defined up to sign; make the largest-magnitude entry positive
    # so that the returned embedding is reproducible
    pivot = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[pivot, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return values, vectors * signs


def choose_k(eigenvalues: np.ndarray, max_k: int | None = None) -> int:
    """Eigengap heuristic: argmax over k in 2..max_k of lambda_k - lambda_{k+1} (descending)."""
    n = len(eigenvalues)
    if n < 3:
        raise ParameterError(f"need at least 3 models to choose k by eigengap, got {n}; pass k")
    upper = min(n - 1, max_k if max_k is not None else max(2, n // 2))
    if upper < 2:
        raise ParameterError(f"max_k must be at least 2, got {max_k}")
    gaps = eigenvalues[:-1] - eigenvalues[1:]
    return int(np.argmax(gaps[1:upper]) + 2)  # gaps[k-1] is the gap for k


EIGEN_TIE = 1e-9  # eigenvalues closer than this are equal up to rounding


def _check_determined(eigenvalues: np.ndarray, k: int, chosen: bool) -> None:
    """Refuse a k whose top-k eigenspace is not unique: its eigenvectors, hence the clusters, would be arbitrary."""
    if not 1 < k < len(eigenvalues):
        return
    gap = float(eigenvalues[k - 1] - eigenvalues[k])
    if gap < EIGEN_TIE:
        how = "the largest eigengap is 0" if chosen else f"eigenvalues {k} and {k + 1} are equal ({eigenvalues[k]:.4f})"
        raise ParameterError(
            f"the SAT matrix does not determine {k} clusters ({how}, e.g. because all pairs have the same SAT): "
            "any split would be arbitrary; "
            + ("give a matrix with structure" if chosen else "choose another k")
        )


def _row_normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _single_thread():
    """One OpenMP thread for sklearn's k-means / t-SNE.

    The problems here are tiny (tens of models); with several OpenMP threads
    the thread start-up and spinning dominate (measured 5-90x slower on a 2-core
    machine), and one thread also makes results independent of the core count.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _kmeans(Y: np.ndarray, k: int, seed: int, n_init: int) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    distinct = len(np.unique(np.round(Y, 10), axis=0))
    if distinct < k:
        raise ParameterError(f"the spectral features have only {distinct} distinct points; choose k <= {distinct}")
    with _single_thread():
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="lloyd").fit(Y)
    return km.labels_, float(km.inertia_)


def _canonical_labels(raw: np.ndarray) -> np.ndarray:
    """Renumber clusters 1..k by first appearance (rows are already in name order)."""
    mapping: dict[int, int] = {}
    for r in raw:
        mapping.setdefault(int(r), len(mapping) + 1)
    return np.array([mapping[int(r)] for r in raw], dtype=np.int64)


def spectral_cluster(
    names: list[str],
    S: np.ndarray,
    k: int | None = None,
    *,
    seed: int = 0,
    n_init: int = 100,
    max_k: int | None = None,
    method: str = CLUSTER_METHOD,
) -> ClusterResult:
    """Spectral clustering of a SAT matrix (paper appendix D.3; details in the module docstring).

    ``k=None`` picks k by the eigengap among 2..``max_k`` (default n // 2).
    The result lists models in the order of ``names``.
    """
    if method not in METHODS:
        raise ParameterError(f"unknown clustering method '{method}'; use {' or '.join(METHODS)}")
    names = [str(n) for n in names]
    S = _check_input(names, S)
    seed = check_seed(seed)
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ParameterError(f"n_init must be a whole number >= 1, got {n_init!r}")
    n = len(names)
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n):
        raise ParameterError(f"k must be between 1 and the number of models ({n}), got {k}")
    order = sorted(range(n), key=lambda i: names[i])  # canonical: models sorted by name
    sorted_names = [names[i] for i in order]
    A, n_clipped, asymmetric = affinity(S[np.ix_(order, order)])
    values, vectors = _eigen(_normalized_affinity(A, sorted_names))
    chosen = k is None
    k = choose_k(values, max_k) if k is None else int(k)
    _check_determined(values, k, chosen)
    Y = _row_normalize(vectors[:, :k]) if method == "njw" else vectors[:, :k]
    raw, inertia = _kmeans(Y, k, seed, n_init)
    labels = _canonical_labels(raw)
    back = np.argsort(order)  # sorted position of each input row
    return ClusterResult(
        names=names,
        labels=labels[back],
        embedding=Y[back],
        eigenvalues=values,
        gaps=values[:-1] - values[1:],
        k=k,
        k_from_eigengap=chosen,
        inertia=inertia,
        n_negative_clipped=n_clipped,
        symmetrized=asymmetric,
        method=method,
    )


# ----------------------------------------------------------------------------- TF-IDF keywords


def card_words(card: dict[str, str]) -> list[str]:
    """A card as a document: one word ``"Component: value"`` per applicable component."""
    from satkit.cards import COMPONENTS, NA

    return [f"{c}: {card[c]}" for c in COMPONENTS if card.get(c, NA) != NA]


def tfidf_keywords(
    labels: np.ndarray | list[int],
    names: list[str],
    cards: pl.DataFrame | None = None,
    top: int = 5,
) -> tuple[pl.DataFrame, list[str]]:
    """Top TF-IDF keywords per cluster (paper Table 1) and the models that have no card.

    Each model with a card is a document whose words are ``"Component: value"``
    (``~`` skipped). TF-IDF is scikit-learn ``TfidfVectorizer`` with a custom
    analyzer and its defaults otherwise: raw counts (0/1 here), smooth IDF
    ``idf(t) = ln((1 + n) / (1 + df(t))) + 1`` over the n models with cards,
    each model's vector L2-normalized. A cluster's score for a word is the mean
    of its models' vectors; the ``top`` words with a positive score are kept,
    ties broken alphabetically. Models without a card are left out and returned.

    Returns (table with ``cluster, rank, keyword, score, n_models``, missing names).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    from satkit.cards import COMPONENTS, cards_for

    labels = np.asarray(labels)
    if len(labels) != len(names):
        raise ParameterError(f"{len(labels)} labels for {len(names)} models; give one label per model")
    if top < 1:
        raise ParameterError(f"top must be at least 1, got {top}")
    found, missing = cards_for(list(names), cards)
    have = found["Model name"].to_list()
    docs = [card_words({c: r[c] for c in COMPONENTS}) for r in found.iter_rows(named=True)]
    rows: list[dict] = []
    if have and any(docs):
        vec = TfidfVectorizer(analyzer=lambda doc: doc, lowercase=False, norm="l2", use_idf=True, smooth_idf=True)
        W = vec.fit_transform(docs).toarray()
        words = vec.get_feature_names_out()
        label_of = dict(zip(names, labels.tolist()))
        doc_labels = np.array([label_of[n] for n in have])
        for cluster in sorted(set(labels.tolist())):
            rows += _cluster_keywords(cluster, W[doc_labels == cluster], words, top)
    schema = {"cluster": pl.Int64, "rank": pl.Int64, "keyword": pl.String, "score": pl.Float64, "n_models": pl.Int64}
    return pl.DataFrame(rows, schema=schema), missing


def _cluster_keywords(cluster: int, W: np.ndarray, words: np.ndarray, top: int) -> list[dict]:
    if len(W) == 0:
        return []  # no member of this cluster has a card
    mean = W.mean(axis=0)
    # round before sorting so float noise does not break alphabetical ties
    ranked = sorted((w for w in range(len(words)) if mean[w] > 0), key=lambda w: (-round(mean[w], 12), words[w]))
    return [
        {"cluster": int(cluster), "rank": r + 1, "keyword": str(words[w]), "score": float(mean[w]), "n_models": len(W)}
        for r, w in enumerate(ranked[:top])
    ]


# ----------------------------------------------------------------------------- plots


def _cluster_order(result: ClusterResult) -> list[int]:
    return sorted(range(len(result.names)), key=lambda i: (int(result.labels[i]), result.names[i]))


def plot_spectral_distances(result: ClusterResult, path: str | os.PathLike) -> None:
    """Heatmap of pairwise Euclidean distances of the spectral features, sorted by cluster (paper Fig. 4)."""
    from scipy.spatial.distance import cdist

    order = _cluster_order(result)
    Y = result.embedding[order]
    D = cdist(Y, Y)
    n = len(order)
    size = min(4 + 0.12 * n, 16)
    fig = new_figure(size + 1.5, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(D, cmap="viridis_r", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="distance of spectral features")
    labels = result.labels[order]
    for b in np.flatnonzero(np.diff(labels)) + 0.5:  # cluster boundaries
        ax.axhline(b, color="white", lw=0.8)
        ax.axvline(b, color="white", lw=0.8)
    if n <= 100:
        ticks = [f"{result.names[i]} ({int(result.labels[i])})" for i in order]
        fontsize = max(3.0, min(8.0, 400.0 / n))
        ax.set_xticks(range(n), ticks, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), ticks, fontsize=fontsize)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"Spectral-feature distances, {result.k} clusters")
    save_figure(fig, path)


def tsne_coordinates(result: ClusterResult, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of the spectral features (scikit-learn, seeded).

    Perplexity min(30, (n-1)/3), at least 1 (it must stay below n); the exact
    gradient for up to 500 models (cheap at that size and more faithful than
    Barnes-Hut for few points), Barnes-Hut beyond.
    """
    from sklearn.manifold import TSNE

    n = len(result.names)
    if n < 2:
        raise ParameterError("t-SNE needs at least 2 models")
    seed = check_seed(seed)
    perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
    init = "pca" if result.embedding.shape[1] >= 2 else "random"
    method = "exact" if n <= 500 else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, method=method, random_state=seed, learning_rate="auto")
    with _single_thread():
        return tsne.fit_transform(result.embedding)


def plot_tsne(result: ClusterResult, path: str | os.PathLike, seed: int = 0, annotate: bool | None = None) -> None:
    """t-SNE map of the models coloured by cluster (paper Fig. 1). Names shown when n <= 80 unless told."""
    xy = tsne_coordinates(result, seed)
    n = len(result.names)
    fig = new_figure(8, 7)
    ax = fig.add_subplot(1, 1, 1)
    cmap = _cluster_cmap(result.k)
    for c in range(1, result.k + 1):
        sel = result.labels == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=36, color=cmap(c - 1), label=f"cluster {c}", edgecolors="black", linewidths=0.3)
    if annotate if annotate is not None else n <= 80:
        for (x, y), name in zip(xy, result.names):
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=7, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of spectral features")
    save_figure(fig, path)


def _cluster_cmap(k: int):
    from matplotlib import colormaps

    if k <= 10:
        return colormaps["tab10"]
    if k <= 20:
        return colormaps["tab20"]
    return colormaps["turbo"].resampled(k)  # beyond 20 qualitative colours run out
