"""satkit logits / satkit ensemble: ERR by hand, planted diversity, greedy selection, refusals."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from satkit.analysis.ensemble import (
    EnsembleData,
    analyze_ensembles,
    cluster_grid,
    error_reduction_rate,
    greedy_select,
    top1_error,
)
from satkit.cli.app import app
from satkit.errors import MismatchError
from satkit.io.tensorfile import write_tensor_file
from satkit.logits import open_logits_files, read_logits
from satkit.matrix.square import write_similarity_matrix
from tests.cli_helpers import assert_clean_error

runner = CliRunner()


def write_logits(path, name, logits, labels, fingerprint="fp-test", ids=None):
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    ids = torch.arange(len(labels), dtype=torch.int64) if ids is None else torch.as_tensor(ids, dtype=torch.int64)
    clean = torch.zeros((len(labels), 1, 4, 4), dtype=torch.uint8)
    write_tensor_file(path, "satkit.logits", {"logits": logits, "labels": labels, "ids": ids, "clean": clean},
                      {"command": "logits", "model": {"name": name}, "data": {"fingerprint": fingerprint, "n": len(labels)}})
    return path


# ------------------------------------------------------------------ by-hand numbers

LABELS = [0, 1, 2, 0]
M1 = [[2, 0, 0], [0, 2, 0], [0, 2, 1], [0, 3, 0]]  # predicts 0, 1, 1, 1 -> wrong on samples 2, 3: 50 %
M2 = [[2, 0, 0], [2.5, 1, 0], [0, 0, 3], [2, 0, 0]]  # predicts 0, 0, 2, 0 -> wrong on sample 1: 25 %
# mean logits: [2,0,0] [1.25,1.5,0] [0,1,2] [1,1.5,0] -> predicts 0, 1, 2, 1 -> wrong on sample 3: 25 %
# ERR = 100 * (1 - 25 / ((50 + 25) / 2)) = 100 / 3


def test_err_and_ensemble_error_by_hand():
    labels = np.array(LABELS)
    assert top1_error(np.array(M1), labels) == 50.0
    assert top1_error(np.array(M2), labels) == 25.0
    data = EnsembleData.from_arrays(["m1", "m2"], [np.array(M1, float), np.array(M2, float)], labels)
    row = data.evaluate((0, 1))
    assert row["ensemble_error"] == pytest.approx(25.0)
    assert row["mean_member_error"] == pytest.approx(37.5)
    assert row["best_member_error"] == pytest.approx(25.0)
    assert row["err"] == pytest.approx(100.0 / 3.0)
    assert error_reduction_rate(25.0, [50.0, 25.0]) == pytest.approx(100.0 / 3.0)
    assert error_reduction_rate(10.0, [10.0, 10.0]) == 0.0  # identical models: no reduction
    assert np.isnan(error_reduction_rate(0.0, [0.0, 0.0]))  # undefined, not 0


def test_cli_by_hand(tmp_path):
    write_logits(tmp_path / "m1.safetensors", "m1", M1, LABELS)
    write_logits(tmp_path / "m2.safetensors", "m2", M2, LABELS)
    write_similarity_matrix(tmp_path / "sat.csv", ["m1", "m2"], np.array([[4.6, 2.0], [2.0, 4.6]]))
    r = runner.invoke(app, ["ensemble", str(tmp_path / "m1.safetensors"), str(tmp_path / "m2.safetensors"),
                            "--sat", str(tmp_path / "sat.csv"), "-o", str(tmp_path / "ens.csv"),
                            "--summary", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.stderr
    df = pl.read_csv(tmp_path / "ens.csv")
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["models"] == "m1+m2" and row["ensemble_error"] == pytest.approx(25.0)
    assert row["err"] == pytest.approx(100 / 3) and row["sat"] == pytest.approx(2.0)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["member_errors"] == {"m1": 50.0, "m2": 25.0}


# ------------------------------------------------------------------ planted diversity


def planted(n_per_group=2, groups=3, n=600, c=10, seed=0):
    """Models of one group make the same errors; groups err on disjoint samples.

    Within a group ERR is ~0 and SAT high; across groups the ensemble fixes
    every error (ERR 100) and SAT is low.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    names, logits, group = [], [], {}
    err_sets = np.array_split(rng.permutation(n), groups * 4)[:groups]  # disjoint, n/12 samples each
    for g in range(groups):
        for j in range(n_per_group):
            x = rng.normal(0, 0.05, (n, c))
            x[np.arange(n), labels] += 5.0
            wrong = err_sets[g]
            x[wrong, labels[wrong]] -= 5.0
            x[wrong, (labels[wrong] + 1) % c] += 3.0
            name = f"g{g}-m{j}"
            names.append(name)
            logits.append(x)
            group[name] = g + 1
    k = len(names)
    S = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            same = group[names[i]] == group[names[j]]
            S[i, j] = 4.6 if i == j else (4.0 + 0.05 * ((i + j) % 3) if same else 1.0 + 0.1 * ((i * j) % 4))
    return names, logits, labels, S, group


def test_correlation_sign_with_planted_diversity():
    names, logits, labels, S, group = planted()
    data = EnsembleData.from_arrays(names, logits, labels)
    rep = analyze_ensembles(data, sat=(names, S), clusters=group, draws=50)
    pairs = rep.pairs()
    same = pairs.filter(pl.col("sat") > 3)
    diff = pairs.filter(pl.col("sat") < 3)
    assert same["err"].max() < 5 and diff["err"].min() > 95
    assert rep.correlation["pearson_r"] < -0.9 and rep.correlation["pearson_p"] < 1e-3
    assert rep.correlation["spearman_r"] < -0.5
    # the cluster grid: M=2 from one cluster = same-group pairs, from two clusters = cross-group pairs
    g = rep.grid
    k1 = g.filter((pl.col("m") == 2) & (pl.col("k") == 1))["mean_err"][0]
    k2 = g.filter((pl.col("m") == 2) & (pl.col("k") == 2))["mean_err"][0]
    rand = g.filter((pl.col("m") == 2) & (pl.col("selection") == "random"))["mean_err"][0]
    assert k1 < 5 < rand < 95 < k2
    assert g.filter((pl.col("m") == 3) & (pl.col("k") == 1)).height == 0  # no cluster holds 3 models


def test_grid_draws_span_exactly_k_clusters():
    names, logits, labels, S, group = planted(n_per_group=3, n=120)
    data = EnsembleData.from_arrays(names, logits, labels)
    labels_arr = np.array([group[n] for n in data.names])
    g1 = cluster_grid(data, labels_arr, draws=20, seed=1)
    g2 = cluster_grid(data, labels_arr, draws=20, seed=1)
    assert g1.equals(g2)  # seeded
    assert set(zip(g1["m"].to_list(), g1["k"].to_list())) >= {(2, 1), (3, 1), (3, 3), (5, 2), (5, 3)}


def test_select_returns_planted_most_diverse_set():
    names = ["a", "b", "c", "d", "e", "f"]
    S = np.full((6, 6), 3.5)
    np.fill_diagonal(S, 4.6)
    idx = {n: i for i, n in enumerate(names)}
    for x, y, v in (("b", "d", 0.3), ("b", "f", 0.5), ("d", "f", 0.6), ("a", "c", 3.0)):
        S[idx[x], idx[y]] = S[idx[y], idx[x]] = v
    chosen = greedy_select(names, S, 3)
    assert {names[i] for i in chosen} == {"b", "d", "f"}
    assert [names[i] for i in greedy_select(names, S, 2)] == ["b", "d"]


def test_cli_select_plot_grid(tmp_path):
    names, logits, labels, S, group = planted(n=200)
    paths = [write_logits(tmp_path / f"{n}.safetensors", n, x, labels) for n, x in zip(names, logits)]
    write_similarity_matrix(tmp_path / "sat.csv", names, S)
    r = runner.invoke(app, ["ensemble", *map(str, paths), "--sat", str(tmp_path / "sat.csv"), "-k", "3", "--select", "3",
                            "--plot", str(tmp_path / "p.png"), "--grid", str(tmp_path / "grid.csv"),
                            "--summary", str(tmp_path / "s.json"), "-o", str(tmp_path / "ens.csv"), "--draws", "20"])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "p.png").stat().st_size > 1000
    s = json.loads((tmp_path / "s.json").read_text())
    chosen = s["select"]["models"].split("+")
    assert len({group[m] for m in chosen}) == 3  # one model per planted group
    assert s["select"]["err"] > s["select"]["random_mean_err"]
    assert s["sat_vs_err_pairs"]["pearson_r"] < -0.9
    assert pl.read_csv(tmp_path / "grid.csv").height > 0
    assert pl.read_csv(tmp_path / "ens.csv")["size"].to_list().count(3) == 20  # C(6, 3), all evaluated


def test_cli_clusters_file(tmp_path):
    names, logits, labels, S, group = planted(n=100)
    paths = [write_logits(tmp_path / f"{n}.safetensors", n, x, labels) for n, x in zip(names, logits)]
    pl.DataFrame({"model": list(group), "cluster": list(group.values())}).write_csv(tmp_path / "clusters.csv")
    r = runner.invoke(app, ["ensemble", *map(str, paths), "--clusters", str(tmp_path / "clusters.csv"),
                            "--grid", str(tmp_path / "grid.csv"), "--draws", "10", "-o", str(tmp_path / "e.csv")])
    assert r.exit_code == 0, r.stderr
    g = pl.read_csv(tmp_path / "grid.csv")
    assert g.filter((pl.col("m") == 2) & (pl.col("k") == 2))["mean_err"][0] > 95
    pl.DataFrame({"model": names[:-1], "cluster": [1] * (len(names) - 1)}).write_csv(tmp_path / "short.csv")
    r = runner.invoke(app, ["ensemble", *map(str, paths), "--clusters", str(tmp_path / "short.csv")])
    assert_clean_error(r, names[-1])


def test_subsets_are_sampled_beyond_max_subsets():
    names, logits, labels, S, _ = planted(n_per_group=3, n=60)  # 9 models: C(9,3)=84, C(9,4)=126
    data = EnsembleData.from_arrays(names, logits, labels)
    rep = analyze_ensembles(data, max_subsets=50, seed=3)
    counts = dict(rep.subsets.group_by("size").len().iter_rows())
    assert counts[2] == 36 and counts[3] == 50 and counts[4] == 50 and counts[5] == 50
    assert rep.sampled_sizes == {3: 50, 4: 50, 5: 50}
    rep2 = analyze_ensembles(data, max_subsets=50, seed=3)
    assert rep.subsets.equals(rep2.subsets)


# ------------------------------------------------------------------ refusals


def test_mismatched_logit_files_are_refused(tmp_path):
    a = write_logits(tmp_path / "a.safetensors", "a", M1, LABELS, fingerprint="fp-one")
    b = write_logits(tmp_path / "b.safetensors", "b", M2, LABELS, fingerprint="fp-two")
    with pytest.raises(MismatchError, match="different clean sets"):
        open_logits_files([a, b])
    r = runner.invoke(app, ["ensemble", str(a), str(b)])
    assert_clean_error(r, "different clean sets")
    c = write_logits(tmp_path / "c.safetensors", "c", M2, LABELS, fingerprint="fp-one", ids=[5, 6, 7, 8])
    with pytest.raises(MismatchError):
        open_logits_files([a, c])
    d = write_logits(tmp_path / "d.safetensors", "a", M2, LABELS, fingerprint="fp-one")
    with pytest.raises(MismatchError, match="both logits of model a"):
        open_logits_files([a, d])


def test_names_missing_from_sat_matrix_are_named(tmp_path):
    a = write_logits(tmp_path / "a.safetensors", "a", M1, LABELS)
    b = write_logits(tmp_path / "b.safetensors", "zzz", M2, LABELS)
    write_similarity_matrix(tmp_path / "sat.csv", ["a", "b"], np.array([[4.6, 2.0], [2.0, 4.6]]))
    r = runner.invoke(app, ["ensemble", str(a), str(b), "--sat", str(tmp_path / "sat.csv")])
    assert_clean_error(r, "zzz")


def test_attack_file_is_not_a_logits_file(tmp_path):
    write_tensor_file(tmp_path / "x.safetensors", "satkit.attack", {"adv": torch.zeros(1)}, {})
    r = runner.invoke(app, ["ensemble", str(tmp_path / "x.safetensors"), str(tmp_path / "x.safetensors")])
    assert_clean_error(r, "satkit.logits")


# ------------------------------------------------------------------ satkit logits


def test_logits_cli_matches_attack_sample(tmp_path):
    from satkit.data import load_data

    out = tmp_path / "l.safetensors"
    r = runner.invoke(app, ["logits", "digits/mixer-s1", "--n", "50", "--data-seed", "1", "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    lg = read_logits(out)
    d = load_data("digits", n=50, seed=1)
    assert lg.name == "digits/mixer-s1" and lg.logits.shape == (50, 10) and lg.logits.dtype == np.float32
    assert lg.fingerprint == d.fingerprint and np.array_equal(lg.ids, d.ids.numpy())
    assert lg.provenance["data"]["n"] == 50 and "versions" in lg.provenance
    # a logits file is also usable as --data: same clean set
    assert load_data(str(out)).fingerprint == d.fingerprint
    r = runner.invoke(app, ["logits", "digits/mixer-s1", "--n", "0", "-o", str(tmp_path / "x.safetensors")])
    assert_clean_error(r, "--n")


def test_logits_nan_is_model_error(tmp_path, tiny):
    from satkit.data import load_data
    from satkit.errors import ModelError
    from satkit.logits import compute_logits

    m = tiny()
    with torch.no_grad():
        m.module.model.fc.bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="NaN"):
        compute_logits(m, load_data("digits", n=20))


def test_logits_without_images(tmp_path, tiny):
    from satkit.data import load_data
    from satkit.logits import compute_logits, save_logits

    res = compute_logits(tiny(), load_data("digits", n=20), store_images=False)
    save_logits(res, tmp_path / "l.safetensors")
    lg = read_logits(tmp_path / "l.safetensors")
    assert lg.logits.shape == (20, 10) and "clean" not in res.tensors


def test_in_place_average_is_bit_identical_to_the_stacked_sum():
    """The buffers reused across subsets give exactly np.sum(stack / |S|, axis=0), subset after subset."""
    import itertools

    from satkit.analysis.ensemble import EnsembleData, _average_into
    from satkit.logits import top1_error

    rng = np.random.default_rng(3)
    logits = [(rng.standard_normal((300, 20)) * 4).astype(np.float32) for _ in range(5)]
    labels = rng.integers(0, 20, 300)
    data = EnsembleData.from_arrays([f"m{i}" for i in range(5)], logits, labels)
    buffers = [np.empty((300, 20)), np.empty((300, 20))]
    for size in (1, 2, 3, 5):
        for key in itertools.combinations(range(5), size):
            stack = np.stack([np.asarray(data.logits[i], dtype=np.float64) for i in key])
            expect = np.sum(stack / len(stack), axis=0)
            assert np.array_equal(_average_into([data.logits[i] for i in key], buffers), expect)
            assert data.ensemble_error(key) == top1_error(expect, labels)
