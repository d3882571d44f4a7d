"""satkit compare on planted matrices: identical -> r = 1, unrelated -> Mantel p large, order does not matter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from satkit.analysis.compare import compare_matrices, mantel_p
from satkit.errors import MismatchError
from satkit.matrix.square import write_similarity_matrix

from cli_helpers import assert_clean_error, run

SIZES = [4, 4, 4]


def planted(seed: int = 0, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    S = 1.5 + 2.0 * (truth[:, None] == truth[None, :]) + rng.normal(0, noise, (len(truth),) * 2)
    S = (S + S.T) / 2
    np.fill_diagonal(S, np.log(100))
    return [f"m{i:02d}" for i in range(len(truth))], S


def test_identical_matrices_agree_perfectly_and_significantly():
    names, S = planted()
    r = compare_matrices(names, S, names, S.copy(), permutations=999)
    assert r.pearson == pytest.approx(1.0) and r.spearman == pytest.approx(1.0)
    assert r.n_pairs == 12 * 11 // 2
    assert r.mantel_p == pytest.approx(1 / 1000)  # no permutation reaches r = 1 with three planted blocks
    assert r.k == 3 and r.ari == pytest.approx(1.0)


def test_order_of_models_does_not_matter():
    names, S = planted()
    perm = np.random.default_rng(3).permutation(len(names))
    names_b, B = planted(seed=1)
    a = compare_matrices(names, S, names_b, B, permutations=199)
    b = compare_matrices(names, S, [names_b[i] for i in perm], B[np.ix_(perm, perm)], permutations=199)
    assert (a.pearson, a.spearman, a.mantel_p, a.ari) == pytest.approx((b.pearson, b.spearman, b.mantel_p, b.ari))


def test_unrelated_matrices_have_a_large_mantel_p():
    names, S = planted()
    shuffled = np.random.default_rng(7).permutation(len(names))  # the same values, given to other models
    r = compare_matrices(names, S, [names[i] for i in shuffled], S, permutations=999)
    assert r.mantel_p > 0.05 and abs(r.pearson) < 0.5


def test_mantel_p_matches_a_plain_loop():
    names, S = planted()
    _, B = planted(seed=5, noise=1.0)
    r, p = mantel_p(S, B, 200, seed=0)
    rng = np.random.default_rng(0)
    iu = np.triu_indices(len(S), 1)
    perms = np.argsort(rng.random((200, len(S))), axis=1)  # drawn as the vectorized chunk draws them
    hits = sum(np.corrcoef(S[iu], B[np.ix_(q, q)][iu])[0, 1] >= r - 1e-12 for q in perms)
    assert r == pytest.approx(np.corrcoef(S[iu], B[iu])[0, 1])
    assert p == pytest.approx((1 + hits) / 201)


def test_disjoint_and_too_small_overlaps_are_refused():
    names, S = planted()
    with pytest.raises(MismatchError, match="share no model"):
        compare_matrices(names, S, [n + "x" for n in names], S)
    with pytest.raises(MismatchError, match="only 2"):
        compare_matrices(names, S, names[:2] + [n + "x" for n in names[2:]], S)


def test_cli_json_plot_and_partial_overlap(tmp_path):
    names, S = planted()
    _, B = planted(seed=2)
    write_similarity_matrix(tmp_path / "a.csv", names, S)
    write_similarity_matrix(tmp_path / "b.csv", names[:-1] + ["other"], B)
    r = run("compare", tmp_path / "a.csv", tmp_path / "b.csv", "--json", "--permutations", 199, "--plot", tmp_path / "s.png")
    d = json.loads(r.stdout)
    assert {"pearson", "spearman", "mantel_p", "n_pairs", "ari", "k"} <= set(d)
    assert d["n_models"] == 11 and d["n_pairs"] == 55 and d["only_in_first"] == [names[-1]] and d["only_in_second"] == ["other"]
    assert 0.8 < d["pearson"] <= 1 and d["mantel_p"] < 0.05
    assert "only in" in r.stderr
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    text = run("compare", tmp_path / "a.csv", tmp_path / "a.csv", "--permutations", 99).stdout
    assert "Pearson 1.0000" in text and "ARI 1.000" in text


def test_cli_bad_inputs(tmp_path):
    names, S = planted()
    write_similarity_matrix(tmp_path / "a.csv", names, S)
    write_similarity_matrix(tmp_path / "z.csv", [n + "z" for n in names], S)
    assert_clean_error(run("compare", tmp_path / "a.csv", tmp_path / "z.csv", ok=False), "share no model")
    assert_clean_error(run("compare", tmp_path / "a.csv", tmp_path / "a.csv", "--permutations", 0, ok=False), "--permutations")
    assert_clean_error(run("compare", tmp_path / "a.csv", tmp_path / "a.csv", "--plot", tmp_path / "a.csv", ok=False), "is also an input")
    assert_clean_error(run("compare", tmp_path / "a.csv", tmp_path / "a.csv", "--plot", tmp_path / "x.jpg", ok=False), "plot format")
