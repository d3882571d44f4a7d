"""The SAT formula and the matrix built from transfer tables.

    SAT(A, B) = ln( max( eps_s, 100 / (2 |X_AB|) * sum_{x in X_AB} [1(A(x_B) != y) + 1(B(x_A) != y)] ) )

natural log, percent scale. ``eps_s`` defaults to 1 (i.e. 1 %), so SAT lies in
[0, ln 100 = 4.605]: a non-negative matrix is a valid affinity for spectral
clustering, and transfer rates below 1 % are indistinguishable noise at the
paper's sample size anyway. The diagonal SAT(A, A) uses A's own attack (both
terms of the sum are the same count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.formats.transfer import PER_SAMPLE_COLUMNS, REQUIRED
from satkit.limits import N_BOOT
from satkit.settings import EPS_S
from satkit.settings import N_BOOT as N_BOOT_DEFAULT

DEFAULT_EPS_S = EPS_S  # the SAT floor, percent: satkit.settings

# eps_s is a percentage floor: below EPS_S_MIN it only adds digits of noise, and
# at 100 or more every cell is the floor (or above ln 100), so the matrix says nothing.
EPS_S_MIN = 1e-20
# Every value a SAT computation can produce lies in [ln(EPS_S_MIN) = -46.05, ln 100];
# SAT_MIN is a round bound below that, SAT_TOL absorbs rounding at ln 100.
SAT_MIN = -50.0
SAT_MAX = math.log(100.0)
SAT_TOL = 1e-9


def check_eps_s(eps_s: float) -> float:
    """``eps_s`` as a float, or a one-line :class:`ParameterError` when it is outside [EPS_S_MIN, 100)."""
    try:
        v = float(eps_s)
    except (TypeError, ValueError):
        raise ParameterError(f"--eps-s must be a number (a percentage, e.g. 1), got {eps_s!r}") from None
    if not EPS_S_MIN <= v < 100.0:  # NaN fails this too
        raise ParameterError(
            f"--eps-s must be a percentage in [{EPS_S_MIN:g}, 100), e.g. 1 (the default); got {eps_s}"
        )
    return v


def check_sat_matrix(names: Sequence[str], S: np.ndarray, what: str = "SAT matrix") -> np.ndarray:
    """``S`` as float, or a one-line :class:`ParameterError` for a cell no SAT computation gives.

    SAT lies in [SAT_MIN, SAT_MAX] (see the constants); analyses that read SAT
    (clustering, importance, ensembles) refuse anything else, e.g. a foreign
    similarity matrix on another scale or 1e308, which would overflow their
    sums. NaN (a pair not measured) is left to the caller.
    """
    S = np.asarray(S, dtype=float)
    if S.shape != (len(names), len(names)):
        raise ParameterError(f"{what} shape {S.shape} does not match {len(names)} names; need a square n x n matrix")
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(S) & ((S < SAT_MIN) | (S > SAT_MAX + SAT_TOL))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        cell = f"({names[i]}, {names[j]})"
        raise ParameterError(
            f"{what} cell {cell} is {S[i, j]:g} ({int(bad.sum())} cell(s) out of range): SAT lies in "
            f"[{SAT_MIN:g}, ln 100 = {SAT_MAX:.4f}] for any eps_s; give a SAT matrix written by satkit matrix or study"
        )
    return S


def _whole(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(x) and x == math.floor(x)


def sat_value(fooled_ab: int, fooled_ba: int, n_both: int, eps_s: float = DEFAULT_EPS_S) -> float:
    """SAT from counts: ``fooled_ab`` = #x in X_AB with B(x_A) != y, ``fooled_ba`` = #x with A(x_B) != y.

    Returns NaN when X_AB is empty (undefined, not zero).
    """
    eps_s = check_eps_s(eps_s)
    if not (_whole(n_both) and n_both >= 0):
        raise ParameterError(f"|X_AB| must be a whole number >= 0, got {n_both!r}")
    if n_both == 0:
        return float("nan")
    if not all(_whole(f) and 0 <= f <= n_both for f in (fooled_ab, fooled_ba)):
        raise ParameterError(
            f"fooled counts must be whole numbers in [0, |X_AB| = {n_both}], got {fooled_ab!r} and {fooled_ba!r}"
        )
    return math.log(max(eps_s, 100.0 * (fooled_ab + fooled_ba) / (2.0 * n_both)))


@dataclass
class SatMatrix:
    names: list[str]
    values: np.ndarray  # (n, n), NaN where undefined
    long: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    eps_s: float = DEFAULT_EPS_S
    # per pair, the mean over both directions of n_same_class / |X_AB|; None when the tables lack the column
    same_class: np.ndarray | None = None

    def frame(self, values: np.ndarray | None = None) -> pl.DataFrame:
        """The square layout: first column holds row names, header holds the same names.

        The first column is called ``model`` unless a model has that name; then
        it is left unnamed (the reader ignores that header), since two columns
        with one name would silently merge.
        """
        values = self.values if values is None else values
        corner = "model" if "model" not in self.names else ""
        cols: dict[str, object] = {corner: self.names}
        for j, n in enumerate(self.names):
            cols[n] = [None if math.isnan(v) else float(v) for v in values[:, j]]
        return pl.DataFrame(cols, schema={corner: pl.Utf8, **{n: pl.Float64 for n in self.names}})


# ----------------------------------------------------------------------------- checking transfer tables

# count columns of a transfer table; the first two are required, the others checked when present
_COUNTS = ("n_both", "n_fooled", "n", "n_source_correct", "n_target_correct", "n_same_class")
_MAX_COUNT = 2**53  # float64 holds whole numbers exactly up to here; no clean set comes near
_SHOWN = 30  # characters of a bad cell quoted in a message


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _cell(v) -> str:
    t = repr(v) if isinstance(v, str) else str(v)
    return t if len(t) <= _SHOWN else t[:_SHOWN] + "..."


def _check_columns(df: pl.DataFrame, where: str = "transfer table") -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputFileError(
            f"{where}: lacks column(s) {', '.join(missing)}; give tables written by `satkit transfer`"
        )


def _names_column(df: pl.DataFrame, col: str, where: str) -> pl.Series:
    s = df[col]
    i = _first(s.is_null().to_numpy())
    if i is None and s.dtype == pl.Utf8:
        i = _first((s.str.strip_chars() == "").to_numpy())
    if i is not None:
        raise InputFileError(f"{where}: row {i + 1}: empty {col} name; every row names its source and target model")
    return s.cast(pl.Utf8)


def _count_column(df: pl.DataFrame, col: str, where: str, pair: list[str]) -> pl.Series:
    """``col`` as Int64, or a one-line error naming the first cell that is not a count.

    Nulls are refused in the required columns and kept (unchecked) in the optional ones.
    """
    s = df[col]
    if s.dtype == pl.Utf8:
        f = s.str.strip_chars().cast(pl.Float64, strict=False)
    elif s.dtype.is_numeric():
        f = s.cast(pl.Float64)
    else:  # booleans, dates, lists: not counts
        f = pl.Series([None] * len(s), dtype=pl.Float64)
    v = f.to_numpy().astype(float)  # nulls become NaN
    orig_null = s.is_null().to_numpy()
    parsed = ~f.is_null().to_numpy()
    with np.errstate(invalid="ignore"):
        ok = parsed & np.isfinite(v) & (v == np.floor(v)) & (v >= 0) & (v <= _MAX_COUNT)
    required = col in REQUIRED
    bad = ~ok & (~orig_null | required)
    i = _first(bad)
    if i is not None:
        o = s[i]
        if o is None:
            why = "is empty"
        elif not parsed[i]:
            why = f"is {_cell(o)}, not a number"
        elif not math.isfinite(v[i]):
            why = f"is {_cell(o)}, not a count"
        elif v[i] != math.floor(v[i]):
            why = f"is {_cell(o)}, not a whole number"
        elif v[i] < 0:
            why = f"is negative ({_cell(o)})"
        else:
            why = f"is {_cell(o)}, too large for a count"
        raise InputFileError(
            f"{where}: row {i + 1} ({pair[i]}): {col} {why}; counts are whole numbers >= 0, "
            "as `satkit transfer` writes them"
        )
    return pl.Series(col, np.where(orig_null, 0, v).astype(np.int64)).scatter(np.flatnonzero(orig_null), None)


# (smaller, larger, why): every row must have smaller <= larger where both are present
_ORDER = (
    ("n_same_class", "n_fooled", "same-class samples are fooled samples"),
    ("n_fooled", "n_both", "the fooled samples are part of X_AB"),
    ("n_both", "n_source_correct", "X_AB holds samples the source classifies correctly"),
    ("n_both", "n_target_correct", "X_AB holds samples the target classifies correctly"),
    ("n_both", "n", "X_AB is part of the clean set"),
    ("n_source_correct", "n", "correct samples are part of the clean set"),
    ("n_target_correct", "n", "correct samples are part of the clean set"),
)


def check_transfer_table(df: pl.DataFrame, where: str = "transfer table") -> pl.DataFrame:
    """A transfer table with its names as strings and counts as Int64, or a one-line :class:`InputFileError`.

    Checks: the required columns exist; source and target are named; the counts
    (``n_both``, ``n_fooled``, and ``n``, ``n_source_correct``, ``n_target_correct``
    when present) are whole numbers >= 0; and
    ``n_fooled <= n_both <= n_source_correct, n_target_correct <= n``.
    Rows are numbered from 1 after the header.
    """
    _check_columns(df, where)
    src = _names_column(df, "source", where)
    tgt = _names_column(df, "target", where)
    pair = [f"{a} -> {b}" for a, b in zip(src.to_list(), tgt.to_list())]
    counts = {c: _count_column(df, c, where, pair) for c in _COUNTS if c in df.columns}
    for small, large, why in _ORDER:
        if small not in counts or large not in counts:
            continue
        a, b = counts[small], counts[large]
        i = _first((a > b).fill_null(False).to_numpy())
        if i is not None:
            raise InputFileError(
                f"{where}: row {i + 1} ({pair[i]}): {small} ({a[i]}) exceeds {large} ({b[i]}), impossible since "
                f"{why}; give tables written by `satkit transfer`"
            )
    return df.with_columns([src, tgt, *counts.values()])


def _dedupe(df: pl.DataFrame) -> pl.DataFrame:
    """The same (source, target) may appear in several tables; identical rows are fine, conflicts are not."""
    keep = [c for c in ("source", "target", "n_both", "n_fooled", "n_same_class", "attack_key", "fingerprint") if c in df.columns]
    d = df.select(keep).unique(maintain_order=True)
    dup = d.group_by(["source", "target"]).len().filter(pl.col("len") > 1)
    if dup.height:
        s, t = dup.row(0)[:2]
        raise MismatchError(
            f"conflicting results for source {s} -> target {t} (different counts or attack files); "
            "remove the stale transfer table"
        )
    return d


def build_matrix(
    tables: list[pl.DataFrame], eps_s: float = DEFAULT_EPS_S, *, where: Sequence[str] | None = None
) -> SatMatrix:
    """Transfer tables -> SAT matrix (names sorted, so the result does not depend on input order).

    ``where`` names the tables in error messages (e.g. their paths); each table
    is checked by :func:`check_transfer_table`.
    """
    eps_s = check_eps_s(eps_s)
    if not tables:
        raise InputFileError("no transfer tables given")
    labels = list(where) if where is not None else [f"transfer table {i + 1}" for i in range(len(tables))]
    if len(labels) != len(tables):
        raise ParameterError(f"{len(labels)} table names for {len(tables)} tables; give one name per table")
    tables = [check_transfer_table(t, w) for t, w in zip(tables, labels)]
    df = pl.concat([t.select([c for c in t.columns if c in _KEEP]) for t in tables], how="diagonal_relaxed")
    if df.height == 0:
        raise InputFileError("transfer tables are empty")
    if "fingerprint" in df.columns:
        fps = df["fingerprint"].drop_nulls().unique().to_list()
        if len(fps) > 1:
            raise MismatchError(
                f"transfer tables come from {len(fps)} different clean sets (fingerprints {', '.join(str(f)[:8] for f in fps)}); "
                "one matrix needs one clean set"
            )
    for col in ("eps", "steps", "attack"):
        if col in df.columns:
            vals = df[col].drop_nulls().unique().to_list()
            if len(vals) > 1:
                raise MismatchError(f"transfer tables mix attack settings ({col} = {', '.join(sorted(map(str, vals)))}); one matrix needs one attack setting")
    df = _dedupe(df)
    sources = set(df["source"].to_list())
    targets = set(df["target"].to_list())
    names = sorted(sources & targets)
    warnings = [f"{m} has an attack file but was never a target; it is left out" for m in sorted(sources - targets)]
    warnings += [f"{m} was a target but has no attack file; it is left out" for m in sorted(targets - sources)]
    if not names:
        raise InputFileError("no model is both a source and a target in these tables; transfer every attack file to every model")
    counts = {(r["source"], r["target"]): (int(r["n_both"]), int(r["n_fooled"])) for r in df.iter_rows(named=True)}
    # all or nothing: a matrix with holes where old files lack the counts would read as measured
    has_same = "n_same_class" in df.columns and df["n_same_class"].null_count() == 0
    same = {(r["source"], r["target"]): r["n_same_class"] for r in df.iter_rows(named=True)} if has_same else {}
    n = len(names)
    M = np.full((n, n), np.nan)
    C = np.full((n, n), np.nan)
    long_rows = []
    for i in range(n):
        for j in range(i, n):
            a, b = names[i], names[j]
            ab, ba = counts.get((a, b)), counts.get((b, a))
            if ab is None or ba is None:
                missing = f"{a} -> {b}" if ab is None else f"{b} -> {a}"
                warnings.append(f"no transfer result for {missing}; SAT({a}, {b}) left empty")
                continue
            if ab[0] != ba[0]:
                raise MismatchError(f"|X_AB| differs between {a} -> {b} ({ab[0]}) and {b} -> {a} ({ba[0]}); the tables are inconsistent")
            nb = ab[0]
            if nb == 0:
                warnings.append(f"X_AB is empty for ({a}, {b}): no sample both classify correctly; SAT left empty")
                v = float("nan")
            elif a == b:
                v = sat_value(ab[1], ab[1], nb, eps_s)
            else:
                v = sat_value(ab[1], ba[1], nb, eps_s)
            M[i, j] = M[j, i] = v
            row = {
                "a": a, "b": b, "n_both": nb,
                "fool_rate_a_to_b": ab[1] / nb if nb else None,
                "fool_rate_b_to_a": ba[1] / nb if nb else None,
                "sat": None if math.isnan(v) else v,
            }
            if has_same:
                sab, sba = same.get((a, b)), same.get((b, a))
                row["same_class_a_to_b"] = sab / nb if nb and sab is not None else None
                row["same_class_b_to_a"] = sba / nb if nb and sba is not None else None
                if row["same_class_a_to_b"] is not None and row["same_class_b_to_a"] is not None:
                    C[i, j] = C[j, i] = (row["same_class_a_to_b"] + row["same_class_b_to_a"]) / 2
            long_rows.append(row)
    schema = {"a": pl.Utf8, "b": pl.Utf8, "n_both": pl.Int64, "fool_rate_a_to_b": pl.Float64, "fool_rate_b_to_a": pl.Float64, "sat": pl.Float64}
    if has_same:
        schema |= {"same_class_a_to_b": pl.Float64, "same_class_b_to_a": pl.Float64}
    long = pl.DataFrame(long_rows, schema=schema)
    return SatMatrix(names=names, values=M, long=long, warnings=warnings, eps_s=eps_s, same_class=C if has_same else None)


_KEEP = {"source", "target", "n_both", "n_fooled", "n_same_class", "fingerprint", "attack_key", "eps", "steps", "attack"}


# ----------------------------------------------------------------------------- bootstrap intervals



def _flag_column(df: pl.DataFrame, col: str, where: str) -> np.ndarray:
    """A true/false column (booleans, or integers 0/1) as a bool array, or a one-line error."""
    s = df[col]
    if s.dtype == pl.Boolean:
        flags = s
    elif s.dtype.is_integer():
        flags = s.replace_strict({0: False, 1: True}, default=None, return_dtype=pl.Boolean)
    elif s.dtype == pl.Utf8:  # a column with one odd cell is read as text
        words = {"true": True, "false": False, "1": True, "0": False}
        flags = s.str.strip_chars().str.to_lowercase().replace_strict(words, default=None, return_dtype=pl.Boolean)
    else:
        flags = pl.Series(col, [None] * len(s), dtype=pl.Boolean)
    i = _first(flags.is_null().to_numpy())
    if i is not None:
        raise InputFileError(
            f"{where}: row {i + 1}: {col} is {_cell(s[i])}, not true/false; use `satkit transfer --per-sample` output"
        )
    return flags.to_numpy().astype(bool)


def check_per_sample_table(df: pl.DataFrame, where: str = "per-sample table") -> pl.DataFrame:
    """A per-sample table (``satkit transfer --per-sample``) checked and typed, or a one-line error.

    Checks: the columns exist and the table has rows; source, target named; ``id``
    whole numbers; the three flags true/false; ``fooled`` only inside X_AB (both
    models correct on the clean sample); each (source, target, id) once.
    """
    missing = [c for c in PER_SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise InputFileError(
            f"{where}: lacks column(s) {', '.join(missing)}; use the output of `satkit transfer --per-sample`"
        )
    if df.height == 0:
        raise InputFileError(f"{where}: no rows; use the output of `satkit transfer --per-sample`")
    src = _names_column(df, "source", where)
    tgt = _names_column(df, "target", where)
    ids = df["id"]
    if ids.dtype.is_integer():
        as_int = ids.cast(pl.Int64, strict=False)
    elif ids.dtype == pl.Utf8 or ids.dtype.is_float():
        f = (ids.str.strip_chars() if ids.dtype == pl.Utf8 else ids).cast(pl.Float64, strict=False)
        whole = (f == f.floor()) & (f.abs() <= _MAX_COUNT)
        as_int = f.cast(pl.Int64, strict=False).zip_with(whole.fill_null(False), pl.Series([None], dtype=pl.Int64))
    else:
        as_int = pl.Series("id", [None] * len(ids), dtype=pl.Int64)
    i = _first(as_int.is_null().to_numpy())
    if i is not None:
        raise InputFileError(f"{where}: row {i + 1}: id is {_cell(ids[i])}, not a whole number; use `satkit transfer --per-sample` output")
    ids = as_int
    sc, tc, fo = (_flag_column(df, c, where) for c in ("source_correct", "target_correct", "fooled"))
    i = _first(fo & ~(sc & tc))
    if i is not None:
        raise InputFileError(
            f"{where}: row {i + 1}: fooled is true but the sample is not in X_AB (source_correct and target_correct "
            "must both be true); use `satkit transfer --per-sample` output"
        )
    out = pl.DataFrame({
        "source": src, "target": tgt, "id": ids.cast(pl.Int64),
        "source_correct": sc, "target_correct": tc, "fooled": fo,
    })
    dup = out.group_by(["source", "target", "id"]).len().filter(pl.col("len") > 1)
    if dup.height:
        s, t, k, c = dup.row(0)
        raise InputFileError(f"{where}: {c} rows for {s} -> {t}, sample id {k}; each sample once per pair")
    return out


def check_bootstrap(level: float, n_boot: int, seed: int) -> None:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise ParameterError(f"--ci must be a number in (0, 1), e.g. 0.95; got {level!r}") from None
    if not 0 < level < 1:
        raise ParameterError(f"ci must be in (0, 1), e.g. 0.95; got {level}")
    # each tail of the percentile interval needs at least one resample
    need = math.ceil(2.0 / (1.0 - level) - 1e-9)
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < need:
        raise ParameterError(
            f"n_boot must be a whole number >= {need} for a {level:g} interval (each tail needs a resample), "
            f"got {n_boot}; the default is {N_BOOT_DEFAULT}"
        )
    N_BOOT.check(n_boot)  # and at most the one upper bound
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"the bootstrap seed must be a whole number >= 0, got {seed!r}")


def bootstrap_ci(
    per_sample: pl.DataFrame | Sequence[pl.DataFrame],
    names: list[str],
    *,
    eps_s: float = DEFAULT_EPS_S,
    level: float = 0.95,
    n_boot: int = N_BOOT_DEFAULT,
    seed: int = 0,
    where: Sequence[str] | None = None,
    matrix: SatMatrix | None = None,
) -> pl.DataFrame:
    """Percentile bootstrap confidence intervals of SAT for every pair, from per-sample outcomes.

    ``per_sample`` is ``satkit transfer --per-sample`` output (source, target, id,
    source_correct, target_correct, fooled), one table or several (``where`` names
    them in messages); each is checked by :func:`check_per_sample_table`. Samples
    of the clean set are drawn with replacement; the same draws serve every pair
    (a paired bootstrap), so the intervals show how much SAT would move with
    another sample of the same size. ``n_boot`` must leave at least one resample
    in each tail. With ``matrix``, every pair's |X_AB| and fooled counts must
    match the ones the matrix was built from (the same transfer run). A pair whose
    X_AB is empty in every resample gets empty bounds.
    """
    eps_s = check_eps_s(eps_s)
    check_bootstrap(level, n_boot, seed)
    frames = [per_sample] if isinstance(per_sample, pl.DataFrame) else list(per_sample)
    if not frames:
        raise InputFileError("no per-sample tables given")
    labels = list(where) if where is not None else (
        ["per-sample table"] if len(frames) == 1 else [f"per-sample table {i + 1}" for i in range(len(frames))]
    )
    if len(labels) != len(frames):
        raise ParameterError(f"{len(labels)} table names for {len(frames)} tables; give one name per table")
    per_sample = pl.concat([check_per_sample_table(f, w) for f, w in zip(frames, labels)])
    dup = per_sample.group_by(["source", "target", "id"]).len().filter(pl.col("len") > 1)
    if dup.height:
        s, t, k, _ = dup.row(0)
        raise InputFileError(f"per-sample tables repeat {s} -> {t}, sample id {k}; give each per-sample table once")
    expected = _expected_counts(matrix) if matrix is not None else None
    ids = np.unique(per_sample["id"].to_numpy())
    pos = {int(i): k for k, i in enumerate(ids)}
    n = len(ids)
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (B, n) draw counts
    rows = []
    groups = {k: g for k, g in per_sample.group_by(["source", "target"])}
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for i, a in enumerate(names):
        for b in names[i:]:
            ab, ba = groups.get((a, b)), groups.get((b, a))
            if ab is None or ba is None:
                continue
            in_xab = np.zeros(n)
            fooled = np.zeros(n)
            n_fooled = []
            # the diagonal has one direction; it counts for both terms of the formula
            for g, count_in, weight in ([(ab, True, 2.0)] if a == b else [(ab, True, 1.0), (ba, False, 1.0)]):
                idx = np.array([pos[int(v)] for v in g["id"].to_list()], dtype=np.int64)
                both = np.zeros(n)
                both[idx] = (g["source_correct"].to_numpy() & g["target_correct"].to_numpy()).astype(float)
                if count_in:  # X_AB is the same set in both directions
                    in_xab = both
                elif not np.array_equal(both, in_xab):
                    raise MismatchError(
                        f"per-sample rows of {a} -> {b} and {b} -> {a} disagree on which samples both models classify "
                        "correctly; use the per-sample tables of one satkit transfer run"
                    )
                f = g["fooled"].to_numpy().astype(float)
                n_fooled.append(int(f.sum()))
                fooled[idx] += f * weight
            if expected is not None and (a, b) in expected:
                nb, fa, fb = expected[(a, b)]
                got = (int(in_xab.sum()), n_fooled[0], n_fooled[-1])
                if got != (nb, fa, fb):
                    raise MismatchError(
                        f"per-sample outcomes for ({a}, {b}) give |X_AB| {got[0]} and fooled {got[1]}/{got[2]}, the transfer "
                        f"tables {nb} and {fa}/{fb}; use the per-sample tables of the same satkit transfer run"
                    )
            denom = 2.0 * (W @ in_xab)
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(denom > 0, 100.0 * (W @ fooled) / denom, np.nan)
            sat = np.log(np.maximum(eps_s, rate))
            ok = np.isfinite(sat)
            lo, hi = (float(v) for v in np.percentile(sat[ok], [lo_q, hi_q])) if ok.any() else (None, None)
            rows.append({"a": a, "b": b, "sat_ci_low": lo, "sat_ci_high": hi})
    return pl.DataFrame(rows, schema={"a": pl.Utf8, "b": pl.Utf8, "sat_ci_low": pl.Float64, "sat_ci_high": pl.Float64})


def _expected_counts(m: SatMatrix) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(a, b) -> (|X_AB|, fooled a -> b, fooled b -> a) from the matrix's long table."""
    out = {}
    for r in m.long.iter_rows(named=True):
        nb = int(r["n_both"])
        fa = round((r["fool_rate_a_to_b"] or 0.0) * nb)
        fb = round((r["fool_rate_b_to_a"] or 0.0) * nb)
        out[(r["a"], r["b"])] = (nb, fa, fb)
    return out
