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
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from satkit.errors import InputFileError, MismatchError, ParameterError

DEFAULT_EPS_S = 1.0
REQUIRED = ["source", "target", "n_both", "n_fooled"]


def sat_value(fooled_ab: int, fooled_ba: int, n_both: int, eps_s: float = DEFAULT_EPS_S) -> float:
    """SAT from counts: ``fooled_ab`` = #x in X_AB with B(x_A) != y, ``fooled_ba`` = #x with A(x_B) != y.

    Returns NaN when X_AB is empty (undefined, not zero).
    """
    if eps_s <= 0:
        raise ParameterError(f"--eps-s must be positive, got {eps_s}")
    if n_both <= 0:
        return float("nan")
    if not (0 <= fooled_ab <= n_both and 0 <= fooled_ba <= n_both):
        raise ValueError("fooled counts must lie in [0, n_both]")
    return math.log(max(eps_s, 100.0 * (fooled_ab + fooled_ba) / (2.0 * n_both)))


@dataclass
class SatMatrix:
    names: list[str]
    values: np.ndarray  # (n, n), NaN where undefined
    long: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    eps_s: float = DEFAULT_EPS_S

    def frame(self) -> pl.DataFrame:
        """The square layout: first column ``model`` holds row names, header holds the same names."""
        cols: dict[str, object] = {"model": self.names}
        for j, n in enumerate(self.names):
            cols[n] = [None if math.isnan(v) else float(v) for v in self.values[:, j]]
        return pl.DataFrame(cols, schema={"model": pl.Utf8, **{n: pl.Float64 for n in self.names}})


def _check_columns(df: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputFileError(f"transfer table lacks column(s) {', '.join(missing)}; give tables written by `satkit transfer`")


def _dedupe(df: pl.DataFrame) -> pl.DataFrame:
    """The same (source, target) may appear in several tables; identical rows are fine, conflicts are not."""
    keep = [c for c in ("source", "target", "n_both", "n_fooled", "attack_key", "fingerprint") if c in df.columns]
    d = df.select(keep).unique(maintain_order=True)
    dup = d.group_by(["source", "target"]).len().filter(pl.col("len") > 1)
    if dup.height:
        s, t = dup.row(0)[:2]
        raise MismatchError(
            f"conflicting results for source {s} -> target {t} (different counts or attack files); "
            "remove the stale transfer table"
        )
    return d


def build_matrix(tables: list[pl.DataFrame], eps_s: float = DEFAULT_EPS_S) -> SatMatrix:
    """Transfer tables -> SAT matrix (names sorted, so the result does not depend on input order)."""
    if eps_s <= 0:
        raise ParameterError(f"--eps-s must be positive, got {eps_s}")
    if not tables:
        raise InputFileError("no transfer tables given")
    for t in tables:
        _check_columns(t)
    df = pl.concat([t.select([c for c in t.columns if c in _KEEP]) for t in tables], how="diagonal_relaxed")
    if df.height == 0:
        raise InputFileError("transfer tables are empty")
    if "fingerprint" in df.columns:
        fps = df["fingerprint"].drop_nulls().unique().to_list()
        if len(fps) > 1:
            raise MismatchError(
                f"transfer tables come from {len(fps)} different clean sets (fingerprints {', '.join(f[:8] for f in fps)}); "
                "one matrix needs one clean set"
            )
    for col in ("eps", "steps", "attack"):
        if col in df.columns:
            vals = df[col].drop_nulls().unique().to_list()
            if len(vals) > 1:
                raise MismatchError(f"transfer tables mix attack settings ({col} = {', '.join(map(str, sorted(vals)))}); one matrix needs one attack setting")
    df = _dedupe(df)
    sources = set(df["source"].to_list())
    targets = set(df["target"].to_list())
    names = sorted(sources & targets)
    warnings = [f"{m} has an attack file but was never a target; it is left out" for m in sorted(sources - targets)]
    warnings += [f"{m} was a target but has no attack file; it is left out" for m in sorted(targets - sources)]
    if not names:
        raise InputFileError("no model is both a source and a target in these tables; transfer every attack file to every model")
    counts = {(r["source"], r["target"]): (int(r["n_both"]), int(r["n_fooled"])) for r in df.iter_rows(named=True)}
    n = len(names)
    M = np.full((n, n), np.nan)
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
            long_rows.append({
                "a": a, "b": b, "n_both": nb,
                "fool_rate_a_to_b": ab[1] / nb if nb else None,
                "fool_rate_b_to_a": ba[1] / nb if nb else None,
                "sat": None if math.isnan(v) else v,
            })
    long = pl.DataFrame(long_rows, schema={"a": pl.Utf8, "b": pl.Utf8, "n_both": pl.Int64, "fool_rate_a_to_b": pl.Float64, "fool_rate_b_to_a": pl.Float64, "sat": pl.Float64})
    return SatMatrix(names=names, values=M, long=long, warnings=warnings, eps_s=eps_s)


_KEEP = {"source", "target", "n_both", "n_fooled", "fingerprint", "attack_key", "eps", "steps", "attack"}


def bootstrap_ci(
    per_sample: pl.DataFrame,
    names: list[str],
    *,
    eps_s: float = DEFAULT_EPS_S,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> pl.DataFrame:
    """Percentile bootstrap confidence intervals of SAT for every pair, from per-sample outcomes.

    ``per_sample`` is ``satkit transfer --per-sample`` output (source, target, id,
    source_correct, target_correct, fooled). Samples of the clean set are drawn with
    replacement; the same draws serve every pair (a paired bootstrap), so the
    intervals show how much SAT would move with another sample of the same size.
    """
    if not 0 < level < 1:
        raise ParameterError(f"--ci must be in (0, 1), e.g. 0.95; got {level}")
    need = {"source", "target", "id", "source_correct", "target_correct", "fooled"}
    missing = need - set(per_sample.columns)
    if missing:
        raise InputFileError(f"per-sample table lacks column(s) {', '.join(sorted(missing))}; use `satkit transfer --per-sample`")
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
            # the diagonal has one direction; it counts for both terms of the formula
            for g, count_in, weight in ([(ab, True, 2.0)] if a == b else [(ab, True, 1.0), (ba, False, 1.0)]):
                idx = np.array([pos[int(v)] for v in g["id"].to_list()])
                if count_in:  # X_AB is the same set in both directions
                    in_xab[idx] = (g["source_correct"].to_numpy() & g["target_correct"].to_numpy()).astype(float)
                fooled[idx] += g["fooled"].to_numpy().astype(float) * weight
            denom = 2.0 * (W @ in_xab)
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(denom > 0, 100.0 * (W @ fooled) / denom, np.nan)
            sat = np.log(np.maximum(eps_s, rate))
            ok = np.isfinite(sat)
            lo, hi = (np.percentile(sat[ok], [lo_q, hi_q]) if ok.any() else (np.nan, np.nan))
            rows.append({"a": a, "b": b, "sat_ci_low": float(lo), "sat_ci_high": float(hi)})
    return pl.DataFrame(rows, schema={"a": pl.Utf8, "b": pl.Utf8, "sat_ci_low": pl.Float64, "sat_ci_high": pl.Float64})
