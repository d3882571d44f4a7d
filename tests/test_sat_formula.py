"""SAT formula and matrix assembly on hand-made outcome tables."""

import math

import numpy as np
import polars as pl
import pytest

from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.matrix.sat import build_matrix, sat_value


def rows(*r):
    return pl.DataFrame(
        [dict(source=s, target=t, n_both=n, n_fooled=f, fingerprint="fp", eps=0.1, steps=50, attack="pgd") for s, t, n, f in r]
    )


def test_sat_value_by_hand():
    # |X_AB| = 20; B fooled by A's adversarials on 12, A fooled by B's on 8 -> 100 * 20 / 40 = 50 %
    assert sat_value(12, 8, 20) == pytest.approx(math.log(50.0))
    # perfect transfer both ways -> ln 100
    assert sat_value(20, 20, 20) == pytest.approx(math.log(100.0))
    # symmetric in its two directions
    assert sat_value(3, 9, 20) == sat_value(9, 3, 20)


def test_eps_s_floor():
    # no transfer at all: the floor
    assert sat_value(0, 0, 50, eps_s=1.0) == pytest.approx(0.0)
    assert sat_value(0, 0, 50, eps_s=0.01) == pytest.approx(math.log(0.01))
    # 1 of 100 fooled one way: 100 * 1 / 200 = 0.5 % -> below a 1 % floor, above a 0.1 % floor
    assert sat_value(1, 0, 100, eps_s=1.0) == pytest.approx(0.0)
    assert sat_value(1, 0, 100, eps_s=0.1) == pytest.approx(math.log(0.5))
    with pytest.raises(ParameterError):
        sat_value(1, 1, 10, eps_s=0)


def test_empty_xab_is_nan_not_zero():
    assert math.isnan(sat_value(0, 0, 0))


def test_matrix_by_hand_and_symmetric():
    t = rows(("A", "A", 10, 9), ("A", "B", 8, 2), ("B", "A", 8, 6), ("B", "B", 9, 9), ("A", "C", 5, 5), ("C", "A", 5, 0),
             ("B", "C", 7, 1), ("C", "B", 7, 1), ("C", "C", 6, 6))
    m = build_matrix([t])
    assert m.names == ["A", "B", "C"]
    expect = {
        ("A", "A"): math.log(90.0), ("A", "B"): math.log(100 * 8 / 16), ("B", "B"): math.log(100.0),
        ("A", "C"): math.log(100 * 5 / 10), ("B", "C"): math.log(100 * 2 / 14), ("C", "C"): math.log(100.0),
    }
    for (a, b), v in expect.items():
        i, j = m.names.index(a), m.names.index(b)
        assert m.values[i, j] == pytest.approx(v)
        assert m.values[j, i] == pytest.approx(v)
    np.testing.assert_array_equal(m.values, m.values.T)
    # long table: one row per unordered pair incl. diagonal
    assert m.long.height == 6
    ab = m.long.filter((pl.col("a") == "A") & (pl.col("b") == "B")).row(0, named=True)
    assert ab["fool_rate_a_to_b"] == pytest.approx(2 / 8) and ab["fool_rate_b_to_a"] == pytest.approx(6 / 8)


def test_empty_xab_gives_empty_cell_and_warning():
    t = rows(("A", "A", 10, 9), ("B", "B", 9, 9), ("A", "B", 0, 0), ("B", "A", 0, 0))
    m = build_matrix([t])
    assert math.isnan(m.values[0, 1])
    assert any("empty" in w for w in m.warnings)
    frame = m.frame()
    assert frame["B"][0] is None  # empty CSV cell


def test_missing_direction_warns():
    t = rows(("A", "A", 10, 9), ("B", "B", 9, 9), ("A", "B", 8, 2))
    m = build_matrix([t])
    assert math.isnan(m.values[0, 1]) and any("B -> A" in w for w in m.warnings)


def test_order_of_inputs_does_not_matter():
    r = [("A", "A", 10, 9), ("A", "B", 8, 2), ("B", "A", 8, 6), ("B", "B", 9, 9)]
    m1 = build_matrix([rows(*r)])
    m2 = build_matrix([rows(*r[2:]), rows(*r[:2])])
    assert m1.names == m2.names
    np.testing.assert_array_equal(m1.values, m2.values)


def test_refuses_mixed_clean_sets_and_settings():
    a = rows(("A", "A", 10, 9))
    b = rows(("B", "B", 10, 9)).with_columns(pl.lit("other").alias("fingerprint"))
    with pytest.raises(MismatchError, match="clean sets"):
        build_matrix([a, b])
    c = rows(("B", "B", 10, 9)).with_columns(pl.lit(0.2).alias("eps"))
    with pytest.raises(MismatchError, match="eps"):
        build_matrix([a, c])


def test_inconsistent_xab_and_conflicts():
    with pytest.raises(MismatchError, match="X_AB"):
        build_matrix([rows(("A", "B", 8, 2), ("B", "A", 7, 6), ("A", "A", 9, 9), ("B", "B", 9, 9))])
    with pytest.raises(MismatchError, match="conflicting"):
        build_matrix([rows(("A", "B", 8, 2)), rows(("A", "B", 8, 3))])


def test_bad_tables():
    with pytest.raises(InputFileError, match="lacks column"):
        build_matrix([pl.DataFrame({"source": ["A"]})])
    with pytest.raises(InputFileError):
        build_matrix([])


def test_bootstrap_ci_brackets_the_estimate_and_shrinks_with_n():
    from satkit.matrix.sat import bootstrap_ci

    def table(n, rate_ab, rate_ba, seed):
        rng = np.random.default_rng(seed)
        rows = []
        for s, t, r in (("A", "B", rate_ab), ("B", "A", rate_ba), ("A", "A", 1.0), ("B", "B", 1.0)):
            f = rng.random(n) < r
            rows += [dict(source=s, target=t, id=i, source_correct=True, target_correct=True, fooled=bool(f[i])) for i in range(n)]
        return pl.DataFrame(rows)

    widths = []
    for n in (50, 800):
        ps = table(n, 0.3, 0.5, seed=1)
        ci = bootstrap_ci(ps, ["A", "B"], n_boot=400, seed=0)
        row = ci.filter((pl.col("a") == "A") & (pl.col("b") == "B")).row(0, named=True)
        counts = ps.group_by(["source", "target"]).agg(pl.col("fooled").sum())
        f = {(r["source"], r["target"]): r["fooled"] for r in counts.iter_rows(named=True)}
        point = sat_value(f[("A", "B")], f[("B", "A")], n)
        assert row["sat_ci_low"] <= point <= row["sat_ci_high"]
        widths.append(row["sat_ci_high"] - row["sat_ci_low"])
        diag = ci.filter((pl.col("a") == "A") & (pl.col("b") == "A")).row(0, named=True)
        assert diag["sat_ci_low"] == pytest.approx(math.log(100)) == diag["sat_ci_high"]
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 16x the samples, about a quarter of the width
