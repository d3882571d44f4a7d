"""Spectral clustering, eigengap, order invariance, TF-IDF keywords, plots."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from satkit.analysis.cluster import (
    affinity,
    plot_spectral_distances,
    plot_tsne,
    spectral_cluster,
    tfidf_keywords,
)
from satkit.cards import COMPONENTS, NAME
from satkit.errors import ParameterError

SIZES = [5, 7, 4, 6]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def planted(seed: int = 0, noise: float = 0.1):
    """SAT-like block matrix: 4.0 inside a block, 1.5 between blocks, diagonal 4.6."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    S = 1.5 + 2.5 * (truth[:, None] == truth[None, :]) + rng.normal(0, noise, (len(truth),) * 2)
    S = (S + S.T) / 2
    np.fill_diagonal(S, math.log(100))
    # names deliberately not in block order
    names = [f"model_{(7 * i) % len(truth):02d}" for i in range(len(truth))]
    return names, S, truth


@pytest.fixture(scope="module")
def result():
    names, S, _ = planted()
    return spectral_cluster(names, S, seed=0)


@pytest.mark.parametrize("method", ["paper", "njw"])
def test_recovers_planted_blocks_and_k(method):
    names, S, truth = planted()
    result = spectral_cluster(names, S, seed=0, method=method)
    assert result.method == method
    assert result.k == len(SIZES)
    assert result.k_from_eigengap
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert int(np.argmax(result.gaps[1:]) + 2) == len(SIZES)
    assert result.embedding.shape == (len(truth), len(SIZES))
    row_norms = np.linalg.norm(result.embedding, axis=1)
    if method == "njw":
        assert np.allclose(row_norms, 1.0)  # NJW row normalization
    else:  # the paper's: the eigenvectors themselves, orthonormal columns
        assert not np.allclose(row_norms, 1.0)
        assert np.allclose(result.embedding.T @ result.embedding, np.eye(len(SIZES)), atol=1e-10)
    assert result.eigenvalues[0] == pytest.approx(1.0)
    assert np.all(np.diff(result.eigenvalues) <= 1e-12)


def test_method_is_recorded_and_checked():
    names, S, _ = planted(noise=0.3, seed=3)
    a = spectral_cluster(names, S, 4, seed=0, method="paper")
    b = spectral_cluster(names, S, 4, seed=0, method="njw")
    assert a.method == "paper" and b.method == "njw"
    assert set(a.to_frame()["method"].to_list()) == {"paper"} and set(b.to_frame()["method"].to_list()) == {"njw"}
    with pytest.raises(ParameterError, match="unknown clustering method"):
        spectral_cluster(names, S, 4, method="kmeans")


def test_invariant_to_model_order(result):
    names, S, _ = planted()
    perm = np.random.default_rng(1).permutation(len(names))
    other = spectral_cluster([names[i] for i in perm], S[np.ix_(perm, perm)], seed=0)
    by_name = dict(zip(result.names, result.labels))
    assert {n: by_name[n] for n in other.names} == dict(zip(other.names, other.labels))
    emb = dict(zip(result.names, result.embedding))
    assert np.allclose(np.array([emb[n] for n in other.names]), other.embedding)


def test_labels_are_canonical(result):
    order = sorted(result.names)
    label = dict(zip(result.names, result.labels))
    first_seen = list(dict.fromkeys(label[n] for n in order))
    assert first_seen == list(range(1, result.k + 1))
    assert label[order[0]] == 1
    assert result.to_frame(coordinates=False).columns == ["model", "cluster", "method"]
    assert result.to_frame().columns == ["model", "cluster", "method"] + [f"spec_{j + 1}" for j in range(result.k)]


def test_diagonal_is_ignored_and_given_k_is_used():
    names, S, truth = planted()
    S2 = S.copy()
    np.fill_diagonal(S2, 0.0)
    a = spectral_cluster(names, S, k=3)
    b = spectral_cluster(names, S2, k=3)
    assert a.k == 3 and not a.k_from_eigengap
    assert np.array_equal(a.labels, b.labels)
    assert np.allclose(a.embedding, b.embedding)


def test_affinity_symmetrizes_clips_and_zeroes_diagonal():
    S = np.array([[4.6, 2.0, -1.0], [3.0, 4.6, 1.0], [-2.0, 1.0, 4.6]])
    A, clipped, asym = affinity(S)
    assert asym and clipped == 2
    assert np.array_equal(A, [[0.0, 2.5, 0.0], [2.5, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_asymmetric_and_negative_inputs_are_reported():
    names, S, truth = planted()
    S = S.copy()
    S[0, 1:] += 0.3  # one-sided row
    S[2, 3] = S[3, 2] = -0.5
    r = spectral_cluster(names, S)
    assert r.symmetrized and r.n_negative_clipped == 2
    assert adjusted_rand_score(truth, r.labels) == 1.0


def test_bad_inputs():
    names, S, _ = planted()
    with pytest.raises(ParameterError, match="between 1 and the number of models"):
        spectral_cluster(names, S, k=0)
    with pytest.raises(ParameterError, match="square"):
        spectral_cluster(names, S[:, :-1])
    S_nan = S.copy()
    S_nan[1, 2] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        spectral_cluster(names, S_nan)
    S_iso = S.copy()
    S_iso[0, 1:] = S_iso[1:, 0] = -1.0
    with pytest.raises(ParameterError, match=f"{names[0]} have no positive similarity"):
        spectral_cluster(names, S_iso)
    with pytest.raises(ParameterError, match="at least 3 models"):
        spectral_cluster(names[:2], S[:2, :2])


# ----------------------------------------------------------------------------- TF-IDF


def tiny_cards() -> pl.DataFrame:
    """Four models; only three components applicable, the rest "~"."""
    spec = {
        "cnn_a": ("CNN", "BN", "ReLU"),
        "cnn_b": ("CNN", "BN", "GeLU"),
        "vit_a": ("Transformer", "LN", "GeLU"),
        "vit_b": ("Transformer", "LN", "~"),
    }
    rows = []
    for name, (base, norm, act) in spec.items():
        card = {c: "~" for c in COMPONENTS}
        card.update({NAME: name, "Base architecture": base, "Normalization": norm, "Activation": act})
        rows.append(card)
    return pl.DataFrame(rows).select([NAME, *COMPONENTS])


def expected_tfidf(docs: dict[str, list[str]], clusters: dict[int, list[str]]) -> dict[int, dict[str, float]]:
    """The documented formula by hand: 0/1 tf, idf = ln((1+n)/(1+df)) + 1, L2 rows, cluster mean."""
    n = len(docs)
    words = sorted({w for d in docs.values() for w in d})
    df = {w: sum(w in d for d in docs.values()) for w in words}
    idf = {w: math.log((1 + n) / (1 + df[w])) + 1 for w in words}
    vec = {}
    for name, d in docs.items():
        raw = {w: idf[w] * (w in d) for w in words}
        norm = math.sqrt(sum(v * v for v in raw.values()))
        vec[name] = {w: raw[w] / norm for w in words}
    return {c: {w: sum(vec[m][w] for m in ms) / len(ms) for w in words} for c, ms in clusters.items()}


def test_tfidf_keywords_match_hand_computation():
    cards = tiny_cards()
    names = ["vit_b", "cnn_a", "vit_a", "cnn_b", "no_card"]
    labels = [2, 1, 2, 1, 2]
    table, missing = tfidf_keywords(labels, names, cards, top=5)
    assert missing == ["no_card"]
    docs = {
        "cnn_a": ["Base architecture: CNN", "Normalization: BN", "Activation: ReLU"],
        "cnn_b": ["Base architecture: CNN", "Normalization: BN", "Activation: GeLU"],
        "vit_a": ["Base architecture: Transformer", "Normalization: LN", "Activation: GeLU"],
        "vit_b": ["Base architecture: Transformer", "Normalization: LN"],
    }
    want = expected_tfidf(docs, {1: ["cnn_a", "cnn_b"], 2: ["vit_a", "vit_b"]})
    for cluster in (1, 2):
        got = table.filter(pl.col("cluster") == cluster)
        ranked = sorted((w for w, s in want[cluster].items() if s > 0), key=lambda w: (-round(want[cluster][w], 12), w))
        assert got["keyword"].to_list() == ranked[:5]
        assert got["score"].to_list() == pytest.approx([want[cluster][w] for w in ranked[:5]], abs=1e-12)
        assert got["rank"].to_list() == list(range(1, len(got) + 1))
    # spot-check one number fully by hand: cluster 2, "Normalization: LN"
    # idf(LN) = ln(5/3) + 1, idf(GeLU) = ln(5/3) + 1, all df = 2 -> vit_a's three words share one idf
    i = math.log(5 / 3) + 1
    ln_score = (i / math.sqrt(3 * i * i) + i / math.sqrt(2 * i * i)) / 2
    top = table.filter(pl.col("cluster") == 2).row(0, named=True)
    assert top["score"] == pytest.approx(ln_score)
    assert top["n_models"] == 2


def test_tfidf_bad_arguments():
    with pytest.raises(ParameterError, match="2 labels for 3 models"):
        tfidf_keywords([1, 2], ["a", "b", "c"], tiny_cards())


# ----------------------------------------------------------------------------- plots


def test_plots_write_png_and_svg(result, tmp_path):
    heat_png, heat_svg = tmp_path / "heat.png", tmp_path / "heat.svg"
    plot_spectral_distances(result, heat_png)
    plot_spectral_distances(result, heat_svg)
    tsne_png = tmp_path / "tsne.png"
    plot_tsne(result, tsne_png, seed=0)
    assert heat_png.read_bytes()[:8] == PNG_SIGNATURE
    assert tsne_png.read_bytes()[:8] == PNG_SIGNATURE
    assert "<svg" in heat_svg.read_text()[:2000]
    assert not list(tmp_path.glob(".*partial"))


def test_plot_rejects_unknown_suffix(result, tmp_path):
    with pytest.raises(ParameterError, match=r"\.png, \.svg or \.pdf"):
        plot_spectral_distances(result, tmp_path / "heat.jpg")
