"""Property tests (hypothesis) for the SAT formula and matrix assembly."""

import math

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from satkit.matrix.sat import build_matrix, sat_value

eps_s_st = st.sampled_from([1e-3, 0.1, 1.0, 5.0])


@st.composite
def counts(draw):
    n = draw(st.integers(1, 500))
    return n, draw(st.integers(0, n)), draw(st.integers(0, n))


@given(counts(), eps_s_st)
def test_formula_symmetric_and_bounded(c, eps_s):
    n, ab, ba = c
    v = sat_value(ab, ba, n, eps_s)
    assert v == sat_value(ba, ab, n, eps_s)
    assert math.log(eps_s) - 1e-12 <= v <= math.log(max(100.0, eps_s)) + 1e-12


@st.composite
def outcome_tables(draw):
    """Random per-sample outcomes for k models -> (per-sample truth, transfer rows)."""
    k = draw(st.integers(1, 5))
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    names = [f"m{i}" for i in range(k)]
    correct = rng.random((k, n)) < draw(st.floats(0.0, 1.0))
    fooled = rng.random((k, k, n)) < draw(st.floats(0.0, 1.0))  # fooled[s, t, x]: t wrong on x_s
    rows = []
    for s in range(k):
        for t in range(k):
            both = correct[s] & correct[t]
            rows.append(dict(source=names[s], target=names[t], n_both=int(both.sum()),
                             n_fooled=int((both & fooled[s, t]).sum()), fingerprint="fp"))
    return names, correct, fooled, rows


def direct_sat(correct, fooled, a, b, eps_s):
    """The formula written as a sum over samples, independent of the implementation."""
    xs = [x for x in range(correct.shape[1]) if correct[a, x] and correct[b, x]]
    if not xs:
        return float("nan")
    total = sum(int(fooled[b, a, x]) + int(fooled[a, b, x]) for x in xs)  # A(x_B) != y, B(x_A) != y
    return math.log(max(eps_s, 100.0 * total / (2 * len(xs))))


@settings(max_examples=60, deadline=None)
@given(outcome_tables(), eps_s_st, st.randoms(use_true_random=False))
def test_matrix_agrees_with_direct_computation_in_any_order(tbl, eps_s, rnd):
    names, correct, fooled, rows = tbl
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    cut = rnd.randint(0, len(shuffled))
    parts = [pl.DataFrame(p) for p in (shuffled[:cut], shuffled[cut:]) if p]
    m = build_matrix(parts, eps_s=eps_s)
    assert m.names == sorted(names)
    M = m.values
    assert np.array_equal(np.isnan(M), np.isnan(M.T))
    assert np.allclose(M[~np.isnan(M)], M.T[~np.isnan(M)])
    for i, a in enumerate(m.names):
        for j, b in enumerate(m.names):
            want = direct_sat(correct, fooled, names.index(a), names.index(b), eps_s)
            if math.isnan(want):
                assert math.isnan(M[i, j])
            else:
                assert math.isclose(M[i, j], want, rel_tol=1e-12, abs_tol=1e-12)
                assert math.log(eps_s) - 1e-12 <= M[i, j] <= math.log(max(100.0, eps_s)) + 1e-12
