"""Bad numbers: transfer tables, per-sample tables, SAT matrices and option values that
could give a wrong number with exit 0, a NaN/inf in an output, or a traceback.

Each must be refused with ONE line naming the problem (library: a SatkitError;
CLI: `satkit: error: ...`, exit 2, existing outputs untouched). No model is run:
every input file is written by hand in the module fixture.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from satkit.analysis.cluster import spectral_cluster
from satkit.analysis.ensemble import EnsembleData, analyze_ensembles, ensemble_logits, greedy_select, read_clusters_table
from satkit.analysis.importance import feature_importance
from satkit.cards import COMPONENTS, NAME
from satkit.cli.app import app
from satkit.data.base import stratified_sample
from satkit.errors import InputFileError, MismatchError, ParameterError, SatkitError
from satkit.formats.logits import LogitsHeader
from satkit.logits import LogitsResult, save_logits
from satkit.matrix.sat import (
    SAT_MAX,
    SAT_MIN,
    bootstrap_ci,
    build_matrix,
    check_eps_s,
    check_sat_matrix,
    sat_value,
)
from satkit.matrix.square import read_similarity_matrix, write_similarity_matrix
from satkit.transfer import TRANSFER_SCHEMA
from tests.cli_helpers import run_bad_case

runner = CliRunner()
MODELS = ["A", "B", "C"]
N = 40  # clean samples
# paper models with built-in cards, for importance
CARDED = ["resnet50", "resnet101", "vit_small_patch16_224", "deit_small_patch16_224", "gmlp_s16_224", "resmlp_24_224"]


def one_line(fn, *args, error=SatkitError, match: str = "", **kwargs) -> str:
    with pytest.raises(error) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert match in msg, (match, msg)
    return msg


# ----------------------------------------------------------------------------- hand-made inputs


def outcomes(seed: int = 0):
    """Per-sample truth for MODELS over N samples: correct[m, x], fooled[s, t, x] (inside X_st only)."""
    rng = np.random.default_rng(seed)
    correct = rng.random((len(MODELS), N)) < 0.8
    fooled = rng.random((len(MODELS), len(MODELS), N)) < 0.4
    fooled &= correct[:, None, :] & correct[None, :, :]
    return correct, fooled


def per_sample_table(correct, fooled) -> pl.DataFrame:
    rows = []
    for s, a in enumerate(MODELS):
        for t, b in enumerate(MODELS):
            for x in range(N):
                rows.append(dict(source=a, target=b, attack_key=f"k{a}", id=x, label=x % 10,
                                 source_correct=bool(correct[s, x]), target_correct=bool(correct[t, x]),
                                 fooled=bool(fooled[s, t, x])))
    return pl.DataFrame(rows)


def transfer_table(correct, fooled) -> pl.DataFrame:
    """A valid transfer table with every column of TRANSFER_SCHEMA, counts from the outcomes."""
    rows = []
    for s, a in enumerate(MODELS):
        for t, b in enumerate(MODELS):
            rows.append(dict(
                source=a, target=b, n=N, n_source_correct=int(correct[s].sum()), n_target_correct=int(correct[t].sum()),
                n_both=int((correct[s] & correct[t]).sum()), n_fooled=int(fooled[s, t].sum()),
                fingerprint="f" * 32, attack_key=f"k{a}", target_weights_id=f"w{b}", eps=0.1, steps=10, attack="pgd",
            ))
    return pl.DataFrame(rows, schema=TRANSFER_SCHEMA)


def with_cell(df: pl.DataFrame, row: int, col: str, value) -> pl.DataFrame:
    """A copy with one cell replaced; the column becomes text so any value fits, as a hand-edited CSV would."""
    vals = [str(v) if v is not None else None for v in df[col].to_list()]
    vals[row] = value
    return df.with_columns(pl.Series(col, vals, dtype=pl.Utf8))


def matrix_csv(names, S) -> str:
    lines = ["model," + ",".join(names)]
    lines += [n + "," + ",".join(str(v) for v in row) for n, row in zip(names, S)]
    return "\n".join(lines) + "\n"


def structured(names, seed: int = 0) -> np.ndarray:
    """A SAT-like matrix in range: two blocks, noise, diagonal ln 100."""
    rng = np.random.default_rng(seed)
    lab = np.arange(len(names)) % 2
    S = np.where(lab[:, None] == lab[None, :], 3.5, 1.0) + rng.normal(0, 0.1, (len(names),) * 2)
    S = (S + S.T) / 2
    np.fill_diagonal(S, SAT_MAX)
    return S


GOOD_CORRECT, GOOD_FOOLED = outcomes(0)
GOOD = transfer_table(GOOD_CORRECT, GOOD_FOOLED)
GOOD_SAMPLES = per_sample_table(GOOD_CORRECT, GOOD_FOOLED)
ROW = 1  # A -> B: the row the broken copies break (row 2 in messages)


def broken_tables() -> dict[str, tuple[pl.DataFrame, list[str]]]:
    """name -> (broken copy of GOOD, words its message must contain)."""
    nb = int(GOOD["n_both"][ROW])
    big = N + 10
    return {
        "fraction": (with_cell(GOOD, ROW, "n_fooled", "2.5"), ["row 2", "A -> B", "n_fooled", "not a whole number"]),
        "negative": (with_cell(GOOD, ROW, "n_fooled", "-3"), ["row 2", "n_fooled", "negative"]),
        "nan": (with_cell(GOOD, ROW, "n_fooled", "NaN"), ["row 2", "n_fooled is", "not a count"]),
        "inf": (with_cell(GOOD, ROW, "n_both", "inf"), ["row 2", "n_both is", "not a count"]),
        "text": (with_cell(GOOD, ROW, "n_fooled", "abc"), ["row 2", "'abc', not a number"]),
        "empty": (with_cell(GOOD, ROW, "n_fooled", None), ["row 2", "n_fooled is empty"]),
        "huge": (with_cell(GOOD, ROW, "n_fooled", "99999999999999999999999"), ["row 2", "too large"]),
        "bool": (GOOD.with_columns(pl.col("n_fooled") > 0), ["row 1", "n_fooled", "not a number"]),
        "fooled-above-both": (with_cell(GOOD, ROW, "n_fooled", str(nb + 1)), ["row 2", f"n_fooled ({nb + 1}) exceeds n_both ({nb})"]),
        "both-above-n": (
            GOOD.with_columns(
                pl.lit(big).alias("n_both"), pl.lit(big).alias("n_source_correct"), pl.lit(big).alias("n_target_correct"), pl.lit(0).alias("n_fooled")
            ),
            ["row 1", f"n_both ({big}) exceeds n ({N})"],
        ),
        "both-above-correct": (with_cell(GOOD, ROW, "n_both", str(N)), ["row 2", "exceeds n_source_correct"]),
        "missing-column": (GOOD.drop("n_fooled"), ["lacks column", "n_fooled"]),
        "empty-source": (with_cell(GOOD, ROW, "source", None), ["row 2", "empty source"]),
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: the good tables and broken copies as CSV, SAT matrices, logits and cluster files."""
    d = tmp_path_factory.mktemp("badnum")
    GOOD.write_csv(d / "t.csv")
    GOOD_SAMPLES.write_csv(d / "s.csv")
    for name, (df, _) in broken_tables().items():
        df.write_csv(d / f"t_{name}.csv")
    text = (d / "t.csv").read_text().splitlines()
    (d / "t_ragged.csv").write_text("\n".join([text[0], text[1] + ",x,y", *text[2:]]) + "\n")
    (d / "t_quote.csv").write_text("\n".join([text[0], '"' + text[1], *text[2:]]) + "\n")
    # per-sample tables
    GOOD_SAMPLES.drop("fooled").write_csv(d / "s_nocol.csv")
    with_cell(GOOD_SAMPLES, 5, "fooled", "maybe").write_csv(d / "s_flag.csv")
    outside = GOOD_SAMPLES.with_row_index().with_columns(
        pl.when(pl.col("index") == int(np.flatnonzero(~GOOD_SAMPLES["source_correct"].to_numpy())[0]))
        .then(True).otherwise(pl.col("fooled")).alias("fooled")
    ).drop("index")
    outside.write_csv(d / "s_outside.csv")
    pl.concat([GOOD_SAMPLES, GOOD_SAMPLES.head(1)]).write_csv(d / "s_dup.csv")
    per_sample_table(*outcomes(1)).write_csv(d / "s_other.csv")  # another run: counts differ from t.csv
    # SAT matrices
    S = structured(MODELS)
    (d / "sat.csv").write_text(matrix_csv(MODELS, S))
    for name, v in (("huge", "1e308"), ("absurd", "-1000"), ("inf", "inf"), ("nan", "nan"), ("over", "1e400")):
        cells = S.astype(object)
        cells[0, 1] = cells[1, 0] = v
        (d / f"sat_{name}.csv").write_text(matrix_csv(MODELS, cells))
    (d / "sat_one.csv").write_text("model,A\nA,4.6\n")
    (d / "sat_const.csv").write_text(matrix_csv(MODELS, np.full((3, 3), 2.0)))
    (d / "sat_nonsquare.csv").write_text("model,A,B\nA,4.6,1\n")
    (d / "sat_dup.csv").write_text("model,A,A\nA,4.6,1\nA,1,4.6\n")
    (d / "sat_cards_const.csv").write_text(matrix_csv(CARDED, np.full((6, 6), 3.0)))
    huge_cards = structured(CARDED).astype(object)
    huge_cards[0, 2] = huge_cards[2, 0] = "1e308"
    (d / "sat_cards_huge.csv").write_text(matrix_csv(CARDED, huge_cards))
    # logits files, written directly
    for i, m in enumerate(MODELS):
        g = torch.Generator().manual_seed(i)
        res = LogitsResult(
            tensors={"logits": torch.randn(N, 10, generator=g), "labels": torch.arange(N) % 10, "ids": torch.arange(N)},
            header=LogitsHeader.from_dict({"model": {"name": m}, "data": {"fingerprint": "f" * 32}}),
        )
        save_logits(res, d / f"{m}.safetensors")
    (d / "clusters_frac.csv").write_text("model,cluster\nA,1\nB,1.5\nC,2\n")
    (d / "clusters_conflict.csv").write_text("model,cluster\nA,1\nB,2\nC,2\nA,2\n")
    return d


# ----------------------------------------------------------------------------- library: transfer tables


def test_good_table_builds():
    m = build_matrix([GOOD], where=["t.csv"])
    assert m.names == MODELS and np.isfinite(m.values).all()
    assert (m.values >= 0).all() and (m.values <= SAT_MAX).all()


@pytest.mark.parametrize("name", list(broken_tables()))
def test_build_matrix_refuses_broken_table(name):
    df, words = broken_tables()[name]
    msg = one_line(build_matrix, [df], where=["t_broken.csv"], error=InputFileError)
    assert msg.startswith("t_broken.csv: "), msg
    for w in words:
        assert w in msg, (w, msg)


def test_build_matrix_names_the_second_table():
    df, _ = broken_tables()["negative"]
    msg = one_line(build_matrix, [GOOD, df], where=["first.csv", "second.csv"], error=InputFileError)
    assert msg.startswith("second.csv: row 2")
    assert one_line(build_matrix, [df], error=InputFileError).startswith("transfer table 1: row 2")


def test_whole_floats_are_counts():
    m = build_matrix([GOOD.with_columns(pl.col("n_fooled").cast(pl.Float64))])
    np.testing.assert_array_equal(m.values, build_matrix([GOOD]).values)


def test_model_named_model_keeps_its_column(tmp_path):
    df = GOOD.with_columns(pl.col("source").replace("C", "model"), pl.col("target").replace("C", "model"))
    m = build_matrix([df])
    frame = m.frame()
    assert frame.columns == ["", "A", "B", "model"]
    frame.write_csv(tmp_path / "m.csv")
    names, S = read_similarity_matrix(tmp_path / "m.csv")
    assert names == ["A", "B", "model"]
    np.testing.assert_array_equal(S, m.values)


# ----------------------------------------------------------------------------- library: eps_s, sat_value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0, 100.0, 1e300, 1e-30, "abc", None])
def test_check_eps_s_refuses(bad):
    one_line(check_eps_s, bad, error=ParameterError, match="--eps-s")
    one_line(sat_value, 1, 1, 10, bad, error=ParameterError, match="--eps-s")
    one_line(build_matrix, [GOOD], bad, error=ParameterError, match="--eps-s")


@pytest.mark.parametrize("ok", [1e-20, 0.01, 1, 99.99])
def test_check_eps_s_accepts(ok):
    assert check_eps_s(ok) == ok
    assert SAT_MIN <= sat_value(0, 0, 10, ok) <= SAT_MAX


def test_sat_value_refuses_impossible_counts():
    one_line(sat_value, 11, 0, 10, error=ParameterError, match="[0, |X_AB| = 10]")
    one_line(sat_value, -1, 0, 10, error=ParameterError)
    one_line(sat_value, 2.5, 0, 10, error=ParameterError)
    one_line(sat_value, 1, 1, math.nan, error=ParameterError, match="|X_AB|")
    one_line(sat_value, 1, 1, -4, error=ParameterError, match="|X_AB|")


# ----------------------------------------------------------------------------- library: bootstrap


def test_bootstrap_good_and_consistent_with_matrix():
    m = build_matrix([GOOD])
    ci = bootstrap_ci(GOOD_SAMPLES, m.names, n_boot=50, level=0.9, matrix=m)
    assert ci.height == 6 and ci["sat_ci_low"].null_count() == 0
    assert np.isfinite(ci["sat_ci_low"].to_numpy()).all() and np.isfinite(ci["sat_ci_high"].to_numpy()).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"n_boot": 0}, "n_boot must"),  # library errors name the field; the CLI shows the flag (satkit.settings.FLAGS)
    ({"n_boot": -5}, "n_boot must"),
    ({"n_boot": 10, "level": 0.95}, "n_boot must be a whole number >= 40"),
    ({"level": 0.0}, "ci must"),
    ({"level": 1.0}, "ci must"),
    ({"level": math.nan}, "ci must"),
    ({"level": 95}, "ci must"),
    ({"seed": -1}, "seed"),
    ({"eps_s": 0}, "--eps-s"),
])
def test_bootstrap_refuses_options(kwargs, match):
    one_line(bootstrap_ci, GOOD_SAMPLES, MODELS, error=ParameterError, match=match, **kwargs)


@pytest.mark.parametrize("table, match, error", [
    (GOOD_SAMPLES.drop("fooled"), "lacks column(s) fooled", InputFileError),
    (GOOD_SAMPLES.head(0), "no rows", InputFileError),
    (with_cell(GOOD_SAMPLES, 5, "fooled", "maybe"), "row 6: fooled is 'maybe', not true/false", InputFileError),
    (with_cell(GOOD_SAMPLES, 3, "id", "x"), "row 4: id", InputFileError),
    (GOOD_SAMPLES.with_columns(pl.lit(True).alias("fooled")), "not in X_AB", InputFileError),
    (pl.concat([GOOD_SAMPLES, GOOD_SAMPLES.tail(1)]), "2 rows for C -> C, sample id 39", InputFileError),
])
def test_bootstrap_refuses_bad_per_sample(table, match, error):
    one_line(bootstrap_ci, table, MODELS, n_boot=50, error=error, match=match)


def test_bootstrap_refuses_other_run_and_inconsistent_directions():
    m = build_matrix([GOOD])
    other = per_sample_table(*outcomes(1))
    one_line(bootstrap_ci, other, MODELS, n_boot=50, matrix=m, error=MismatchError, match="same satkit transfer run")
    # B -> A claims A is wrong on a sample where A -> B has both correct
    x = int(np.flatnonzero(GOOD_CORRECT[0] & GOOD_CORRECT[1])[0])
    flip = GOOD_SAMPLES.with_columns(
        pl.when((pl.col("source") == "B") & (pl.col("target") == "A") & (pl.col("id") == x))
        .then(False).otherwise(pl.col("target_correct")).alias("target_correct"),
        pl.when((pl.col("source") == "B") & (pl.col("target") == "A") & (pl.col("id") == x))
        .then(False).otherwise(pl.col("fooled")).alias("fooled"),
    )
    one_line(bootstrap_ci, flip, MODELS, n_boot=50, error=MismatchError, match="disagree")


def test_bootstrap_empty_xab_gives_empty_bounds_not_nan():
    samples = GOOD_SAMPLES.with_columns(pl.lit(False).alias("source_correct"), pl.lit(False).alias("fooled"))
    ci = bootstrap_ci(samples, MODELS, n_boot=50)
    assert ci["sat_ci_low"].null_count() == ci.height  # null (empty cell), never NaN
    assert not ci["sat_ci_low"].is_nan().fill_null(False).any()


# ----------------------------------------------------------------------------- library: data seed


@pytest.mark.parametrize("n", [5, None])
def test_negative_data_seed_refused(n):
    labels = np.arange(30) % 3
    one_line(stratified_sample, labels, n, -1, error=ParameterError, match="--data-seed")
    one_line(stratified_sample, labels, n, 1.5, error=ParameterError, match="--data-seed")
    assert len(stratified_sample(labels, n, 0)) == (n or 30)


# ----------------------------------------------------------------------------- library: SAT matrices


def test_sat_range():
    names = ["a", "b"]
    check_sat_matrix(names, np.array([[SAT_MAX, SAT_MIN], [SAT_MAX + 1e-12, np.nan]]))  # edges, rounding and NaN pass
    for v in (4.7, -50.1, 1e308, np.inf, -np.inf):
        one_line(check_sat_matrix, names, np.array([[SAT_MAX, v], [0.0, 0.0]]), error=ParameterError, match="(a, b)")


@pytest.mark.parametrize("cell, match", [("inf", "infinite"), ("-inf", "infinite"), ("nan", "NaN"), ("1e400", "infinite"), ("", "empty")])
def test_read_refuses_non_finite(tmp_path, cell, match):
    p = tmp_path / "m.csv"
    p.write_text(f"model,a,b\na,4.6,{cell}\nb,1,4.6\n")
    one_line(read_similarity_matrix, p, error=InputFileError, match=match)


def test_read_accepts_huge_but_analyses_refuse(tmp_path):
    p = tmp_path / "m.csv"
    S = structured(CARDED)
    S[0, 1] = S[1, 0] = 1e308
    p.write_text(matrix_csv(CARDED, S))
    names, M = read_similarity_matrix(p)  # a finite number: reading is not SAT-specific
    assert M[0, 1] == 1e308
    one_line(spectral_cluster, names, M, error=ParameterError, match="1e+308")
    one_line(feature_importance, names, M, error=ParameterError, match="1e+308")
    data = EnsembleData.from_arrays(names, [np.eye(10)[np.arange(N) % 10] for _ in names], np.arange(N) % 10)
    one_line(analyze_ensembles, data, sat=(names, M), error=ParameterError, match="1e+308")


def test_cluster_refuses_degenerate_matrices():
    one_line(spectral_cluster, MODELS, np.full((3, 3), 2.0), error=ParameterError, match="does not determine 2 clusters")
    one_line(spectral_cluster, ["a"], np.array([[4.6]]), error=ParameterError, match="at least 2")
    one_line(spectral_cluster, ["a", "a", "b"], structured(MODELS), error=ParameterError, match="duplicate")
    # four identical blocks: eigenvalues 2..4 tie, so 3 clusters are not determined
    lab = np.arange(8) % 4
    S = np.where(lab[:, None] == lab[None, :], 4.0, 1.0)
    names = [f"m{i}" for i in range(8)]
    one_line(spectral_cluster, names, S, k=3, error=ParameterError, match="choose another k")
    assert spectral_cluster(names, S, k=4).k == 4
    for seed in (-1, 2**32, 1.5):
        one_line(spectral_cluster, MODELS, structured(MODELS), seed=seed, error=ParameterError, match="--seed")


def _cards(names):
    rng = np.random.default_rng(0)
    return pl.DataFrame({NAME: names, **{c: [f"v{v}" for v in rng.integers(0, 2, len(names))] for c in COMPONENTS}})


@pytest.mark.parametrize("noise", [0.0, 1e-12])
def test_importance_refuses_constant_sat(noise):
    names = [f"m{i:02d}" for i in range(8)]
    S = 3.0 + noise * np.random.default_rng(0).random((8, 8))
    one_line(feature_importance, names, S, _cards(names), error=ParameterError, match="all 28 model pairs have the same SAT")


def test_importance_refuses_bad_seed_and_inf():
    names = [f"m{i:02d}" for i in range(8)]
    S = structured(names)
    one_line(feature_importance, names, S, _cards(names), seed=-1, error=ParameterError, match="--seed")
    S[0, 1] = np.inf
    one_line(feature_importance, names, S, _cards(names), error=ParameterError, match="(m00, m01) is inf")


def test_ensemble_logits_never_overflow():
    big = np.array([[1e308, -1e308, 0.0]])
    avg = ensemble_logits([big, big, -big * 0.5])
    assert np.isfinite(avg).all() and int(avg.argmax()) == 0


def test_ensemble_refuses_bad_seed_nan_select_and_bad_clusters(ws):
    data = EnsembleData.from_arrays(MODELS, [np.eye(10)[(np.arange(N) + i) % 10] for i in range(3)], np.arange(N) % 10)
    one_line(analyze_ensembles, data, seed=-1, error=ParameterError, match="--seed")
    S = structured(MODELS)
    S[0, 1] = np.nan
    one_line(greedy_select, MODELS, S, 2, error=ParameterError, match="SAT(A, B) is missing")
    one_line(read_clusters_table, str(ws / "clusters_frac.csv"), error=InputFileError, match="1.5, not an integer")
    one_line(read_clusters_table, str(ws / "clusters_conflict.csv"), error=InputFileError, match="clusters 1 and 2")


def test_write_then_read_round_trip_stays_in_range(tmp_path):
    m = build_matrix([GOOD])
    write_similarity_matrix(tmp_path / "s.csv", m.names, m.values)
    names, S = read_similarity_matrix(tmp_path / "s.csv")
    check_sat_matrix(names, S)


# ----------------------------------------------------------------------------- CLI

_MATRIX_CI = ["--ci", "0.95", "-o", "{out}.csv", "--long", "{out}_long.csv"]
_LOGITS = ["{d}/A.safetensors", "{d}/B.safetensors", "{d}/C.safetensors"]

# (id, args (with {d} for the workspace, {out} for an output prefix), words the message must contain)
CASES = [
    ("matrix-count-fraction", ["matrix", "{d}/t_fraction.csv", "-o", "{out}.csv"], ["t_fraction.csv", "row 2", "n_fooled", "not a whole number"]),
    ("matrix-count-negative", ["matrix", "{d}/t_negative.csv", "-o", "{out}.csv"], ["t_negative.csv", "row 2", "negative"]),
    ("matrix-count-nan", ["matrix", "{d}/t_nan.csv", "-o", "{out}.csv"], ["t_nan.csv", "row 2", "n_fooled is nan"]),
    ("matrix-count-inf", ["matrix", "{d}/t_inf.csv", "-o", "{out}.csv"], ["t_inf.csv", "n_both is inf"]),
    ("matrix-count-text", ["matrix", "{d}/t_text.csv", "-o", "{out}.csv"], ["t_text.csv", "row 2", "not a number"]),
    ("matrix-count-empty", ["matrix", "{d}/t_empty.csv", "-o", "{out}.csv"], ["t_empty.csv", "row 2", "n_fooled is empty"]),
    ("matrix-count-huge", ["matrix", "{d}/t_huge.csv", "-o", "{out}.csv"], ["t_huge.csv", "too large"]),
    ("matrix-count-true-false", ["matrix", "{d}/t_bool.csv", "-o", "{out}.csv"], ["t_bool.csv", "n_fooled", "not a number"]),
    ("matrix-fooled-above-both", ["matrix", "{d}/t_fooled-above-both.csv", "-o", "{out}.csv"], ["row 2", "exceeds n_both"]),
    ("matrix-both-above-n", ["matrix", "{d}/t_both-above-n.csv", "-o", "{out}.csv"], ["row 1", "n_both", "exceeds n ("]),
    ("matrix-both-above-correct", ["matrix", "{d}/t_both-above-correct.csv", "-o", "{out}.csv"], ["exceeds n_source_correct"]),
    ("matrix-missing-count-column", ["matrix", "{d}/t_missing-column.csv", "-o", "{out}.csv"], ["t_missing-column.csv", "lacks column", "n_fooled"]),
    ("matrix-empty-source", ["matrix", "{d}/t_empty-source.csv", "-o", "{out}.csv"], ["row 2", "empty source"]),
    ("matrix-ragged-csv", ["matrix", "{d}/t_ragged.csv", "-o", "{out}.csv"], ["t_ragged.csv", "cannot read"]),
    ("matrix-unclosed-quote", ["matrix", "{d}/t_quote.csv", "-o", "{out}.csv"], ["t_quote.csv"]),
    ("matrix-eps-s-nan", ["matrix", "{d}/t.csv", "--eps-s", "nan", "-o", "{out}.csv"], ["--eps-s", "nan"]),
    ("matrix-eps-s-inf", ["matrix", "{d}/t.csv", "--eps-s", "inf", "-o", "{out}.csv"], ["--eps-s", "inf"]),
    ("matrix-eps-s-zero", ["matrix", "{d}/t.csv", "--eps-s", "0", "-o", "{out}.csv"], ["--eps-s", "[1e-20, 100)"]),
    ("matrix-eps-s-negative", ["matrix", "{d}/t.csv", "--eps-s", "-1", "-o", "{out}.csv"], ["--eps-s"]),
    ("matrix-eps-s-100", ["matrix", "{d}/t.csv", "--eps-s", "100", "-o", "{out}.csv"], ["--eps-s"]),
    ("matrix-eps-s-tiny", ["matrix", "{d}/t.csv", "--eps-s", "1e-30", "-o", "{out}.csv"], ["--eps-s"]),
    ("matrix-n-boot-zero", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--n-boot", "0", *_MATRIX_CI], ["--n-boot", "got 0"]),
    ("matrix-n-boot-negative", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--n-boot", "-5", *_MATRIX_CI], ["--n-boot", "got -5"]),
    ("matrix-n-boot-too-few", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--n-boot", "10", *_MATRIX_CI], ["--n-boot", ">= 40"]),
    ("matrix-ci-zero", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--ci", "0", "-o", "{out}.csv", "--long", "{out}_long.csv"], ["--ci"]),
    ("matrix-ci-one", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--ci", "1", "-o", "{out}.csv", "--long", "{out}_long.csv"], ["--ci"]),
    ("matrix-ci-percent", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--ci", "95", "-o", "{out}.csv", "--long", "{out}_long.csv"],
     ["--ci", "(0, 1)"]),
    ("matrix-ci-nan", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--ci", "nan", "-o", "{out}.csv", "--long", "{out}_long.csv"], ["--ci"]),
    ("matrix-per-sample-no-fooled", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s_nocol.csv", *_MATRIX_CI], ["s_nocol.csv", "lacks column", "fooled"]),
    ("matrix-per-sample-flag-text", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s_flag.csv", *_MATRIX_CI], ["s_flag.csv", "row 6", "not true/false"]),
    ("matrix-per-sample-fooled-outside", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s_outside.csv", *_MATRIX_CI], ["s_outside.csv", "not in X_AB"]),
    ("matrix-per-sample-duplicate", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s_dup.csv", *_MATRIX_CI], ["s_dup.csv", "2 rows for A -> A, sample id 0"]),
    ("matrix-per-sample-twice", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s.csv", "--per-sample", "{d}/s.csv", *_MATRIX_CI], ["repeat"]),
    ("matrix-per-sample-other-run", ["matrix", "{d}/t.csv", "--per-sample", "{d}/s_other.csv", *_MATRIX_CI], ["same satkit transfer run"]),
    ("data-seed-negative", ["attack", "digits/resnet-s1", "--n", "10", "--data-seed", "-1", "-o", "{out}.safetensors"], ["--data-seed", "-1"]),
    ("cluster-sat-huge", ["cluster", "{d}/sat_huge.csv", "-o", "{out}.csv"], ["(A, B)", "1e+308", "SAT lies in"]),
    ("cluster-sat-absurd", ["cluster", "{d}/sat_absurd.csv", "-o", "{out}.csv"], ["-1000", "SAT lies in"]),
    ("cluster-sat-inf", ["cluster", "{d}/sat_inf.csv", "-o", "{out}.csv"], ["sat_inf.csv", "infinite"]),
    ("cluster-sat-overflow", ["cluster", "{d}/sat_over.csv", "-o", "{out}.csv"], ["sat_over.csv", "infinite"]),
    ("cluster-sat-nan", ["cluster", "{d}/sat_nan.csv", "-o", "{out}.csv"], ["sat_nan.csv", "NaN"]),
    ("cluster-one-model", ["cluster", "{d}/sat_one.csv", "-o", "{out}.csv"], ["at least 2"]),
    ("cluster-constant", ["cluster", "{d}/sat_const.csv", "-o", "{out}.csv"], ["does not determine"]),
    ("cluster-not-square", ["cluster", "{d}/sat_nonsquare.csv", "-o", "{out}.csv"], ["not square"]),
    ("cluster-duplicate-names", ["cluster", "{d}/sat_dup.csv", "-o", "{out}.csv"], ["duplicate"]),
    ("cluster-seed-negative", ["cluster", "{d}/sat.csv", "--seed", "-1", "-o", "{out}.csv"], ["--seed"]),
    ("cluster-k-zero", ["cluster", "{d}/sat.csv", "-k", "0", "-o", "{out}.csv"], ["k must be between"]),
    ("importance-constant", ["importance", "{d}/sat_cards_const.csv", "-o", "{out}.csv"], ["same SAT", "cannot be estimated"]),
    ("importance-sat-huge", ["importance", "{d}/sat_cards_huge.csv", "-o", "{out}.csv"], ["1e+308", "SAT lies in"]),
    ("importance-seed-negative", ["importance", "{d}/sat.csv", "--seed", "-1", "-o", "{out}.csv"], ["--seed"]),
    ("ensemble-sat-huge", ["ensemble", *_LOGITS, "--sat", "{d}/sat_huge.csv", "-o", "{out}.csv", "--summary", "{out}.json"], ["1e+308", "SAT lies in"]),
    ("ensemble-sat-absurd", ["ensemble", *_LOGITS, "--sat", "{d}/sat_absurd.csv", "--select", "2", "-o", "{out}.csv"], ["-1000"]),
    ("ensemble-seed-negative", ["ensemble", *_LOGITS, "--seed", "-1", "-o", "{out}.csv"], ["--seed"]),
    ("ensemble-clusters-fraction", ["ensemble", *_LOGITS, "--clusters", "{d}/clusters_frac.csv", "-o", "{out}.csv"], ["not an integer"]),
    ("ensemble-clusters-conflict", ["ensemble", *_LOGITS, "--clusters", "{d}/clusters_conflict.csv", "-o", "{out}.csv"], ["clusters 1 and 2"]),
    ("ensemble-k-constant-sat", ["ensemble", *_LOGITS, "--sat", "{d}/sat_const.csv", "-k", "2", "-o", "{out}.csv"], ["does not determine"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_number(ws, tmp_path, case):
    run_bad_case(case, ws, tmp_path)


def test_good_inputs_pass_through_the_cli(ws, tmp_path):
    """The fixture's good files are accepted, so each refusal above is caused by the one broken thing."""
    r = runner.invoke(app, ["matrix", str(ws / "t.csv"), "--per-sample", str(ws / "s.csv"), "--ci", "0.9", "--n-boot", "50",
                            "-o", str(tmp_path / "m.csv"), "--long", str(tmp_path / "l.csv"), "-q"])
    assert r.exit_code == 0, r.stderr
    long = pl.read_csv(tmp_path / "l.csv")
    assert long["sat_ci_low"].null_count() == 0 and long["sat"].is_finite().all()
    r = runner.invoke(app, ["ensemble", *(a.format(d=ws) for a in _LOGITS), "--sat", str(ws / "sat.csv"), "--select", "2",
                            "-o", str(tmp_path / "e.csv"), "--summary", str(tmp_path / "e.json"), "-q"])
    assert r.exit_code == 0, r.stderr
    import json

    json.loads((tmp_path / "e.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the summary JSON"))
