"""Model diversity and ensembles (paper section 5.1, Fig. 6, Fig. 7, Table 3).

Ensemble. Unweighted logit averaging (the paper's "unweighted average
method"): the ensemble of a set S of models predicts
``argmax_c (1/|S|) sum_{m in S} logits_m(x)_c``.

Errors. ``Err(m)`` is the top-1 error of model m on the clean set, in percent;
``Err(S)`` the top-1 error of the ensemble of S.

Error Reduction Rate (paper 5.1: "Because the ensemble performance is
sensitive to the original model performances, we define Error Reduction Rate
(ERR)")::

    ERR(S) = 100 * (1 - Err(S) / ((1/|S|) * sum_{m in S} Err(m)))      [percent]

i.e. by how much (in percent of the members' mean error) the ensemble reduces
the error. ERR > 0: the ensemble beats the average member; ERR = 0 for an
ensemble of identical models; it is undefined (NaN) when every member is error
free. (The formula's symbols are lost in the text extraction of the paper
this package was built from; the surrounding sentence -- S is the set of
ensembled models, Err(m) the top-1 error of model m, Err(S) the top-1 error
of the ensemble -- fixes this form, as in the published paper.)

SAT of a set. For a pair, SAT(a, b) from the matrix (symmetrized,
``(S_ab + S_ba) / 2``, a no-op for a full SAT matrix); for |S| > 2 the mean of
SAT over the |S|(|S|-1)/2 pairs.

Subsets evaluated. Every pair; for sizes 3..5 (``max_size``) every subset when
there are at most ``max_subsets`` of that size, else a seeded sample of
``max_subsets`` distinct subsets. Models are sorted by name first, so results do
not depend on the order of the input files.

Correlation (Fig. 6). Pearson and Spearman correlation (``scipy.stats``) between
SAT and ERR over all pairs with a defined ERR, with their two-sided p-values.
The paper finds a strong negative correlation: more similar pairs (higher SAT)
reduce the error less.

Cluster grid (Fig. 7 / Table 3). Given a clustering of the models, for
M = 2..5 and K = 1..M: ``draws`` seeded draws of an M-model ensemble "drawn from
K clusters": K distinct clusters are chosen uniformly among the K-cluster
combinations that hold at least M models in total, one model is drawn from
each chosen cluster (so all K are represented), and the remaining M - K models
are drawn from the other members of the chosen clusters (without replacement).
A cell is empty when no K clusters hold M models. The ``rand`` column is the
mean ERR over random M-subsets of all models (the same subsets as the subset
table: all, or the seeded sample). Larger K = more diverse ensembles.

Diverse selection (``--select M``, Table 3's "SAT" vs "random"). Greedy: start
from the pair with the lowest SAT; then repeatedly add the model whose total
SAT to the models chosen so far (sum over chosen c of SAT(m, c)) is lowest;
ties go to the alphabetically first model. The chosen set's ERR is compared
with the mean ERR of random M-subsets (all M-subsets, or a seeded sample of
``max_subsets``) and its percentile among them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import polars as pl

from satkit.errors import MismatchError, ParameterError
from satkit.logits import Logits, top1_error
from satkit.matrix.sat import check_sat_matrix

MAX_SIZE = 5
DEFAULT_MAX_SUBSETS = 2000
DEFAULT_DRAWS = 200
_ENUMERATE_LIMIT = 200_000  # K-cluster combinations enumerated exactly up to this count


# ----------------------------------------------------------------------------- formulas


def ensemble_logits(logits: Sequence[np.ndarray]) -> np.ndarray:
    """Unweighted average of the members' logits.

    Each member is divided by |S| before summing: the partial sums then stay
    within the largest logit, so finite logits near the float64 limit cannot
    overflow to inf (and inf - inf to NaN, which argmax would take as a class).
    """
    return _average_into(logits, None)


def _average_into(logits: Sequence[np.ndarray], buffers: list[np.ndarray] | None) -> np.ndarray:
    """The average of ``logits`` in float64, accumulated in place in ``buffers`` (two arrays of the logits'
    shape; allocated when None).

    Adding the members one at a time in order is what ``np.sum(stack, axis=0)`` does, so the result is
    bit-identical to summing a stacked copy, without allocating a stack per subset (at 5,000 images x
    1,000 classes that stack cost most of the ensemble analysis in page faults).
    """
    n = len(logits)
    if buffers is None:
        buffers = [np.empty(np.shape(logits[0]), dtype=np.float64) for _ in range(2)]
    acc, tmp = buffers
    np.divide(logits[0], n, out=acc, dtype=np.float64)
    for x in logits[1:]:
        np.divide(x, n, out=tmp, dtype=np.float64)
        acc += tmp
    return acc


def error_reduction_rate(ensemble_error: float, member_errors: Sequence[float]) -> float:
    """ERR(S) = 100 * (1 - Err(S) / mean_{m in S} Err(m)), percent; NaN when the members make no errors."""
    mean = float(np.mean(member_errors))
    if not mean > 0:
        return float("nan")
    return 100.0 * (1.0 - float(ensemble_error) / mean)


def set_sat(S: np.ndarray, idx: Sequence[int]) -> float:
    """Mean SAT over the pairs of ``idx`` (symmetrized); the pair's SAT for two models."""
    vals = [S[i, j] / 2.0 + S[j, i] / 2.0 for i, j in itertools.combinations(idx, 2)]  # halves first: no overflow
    return float(np.mean(vals)) if vals else float("nan")


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation with two-sided p-values (NaN when undefined)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    out = {"n": int(len(x)), "pearson_r": math.nan, "pearson_p": math.nan, "spearman_r": math.nan, "spearman_p": math.nan}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    out.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue), spearman_r=float(sr.statistic), spearman_p=float(sr.pvalue))
    return out


def greedy_select(names: Sequence[str], S: np.ndarray, m: int) -> list[int]:
    """Indices of ``m`` diverse models: the lowest-SAT pair, then the model with the lowest total SAT to the chosen.

    ``names`` only breaks ties (alphabetical). ``S`` is symmetrized first.
    """
    n = len(names)
    if not 2 <= m <= n:
        raise ParameterError(f"--select must be between 2 and the number of models ({n}), got {m}")
    S = np.asarray(S, dtype=float)
    if S.shape != (n, n):
        raise ParameterError(f"SAT matrix shape {S.shape} does not match {n} names")
    if not np.isfinite(S).all():
        # NaN compares false both ways, so min() would pick an arbitrary pair
        i, j = (int(v) for v in np.argwhere(~np.isfinite(S))[0])
        raise ParameterError(f"SAT({names[i]}, {names[j]}) is missing; --select needs the SAT of every pair")
    A = S / 2.0 + S.T / 2.0
    order = sorted(range(n), key=lambda i: names[i])
    rank = {i: r for r, i in enumerate(order)}
    best = min(
        ((i, j) for i, j in itertools.combinations(range(n), 2)),
        key=lambda p: (A[p[0], p[1]], min(rank[p[0]], rank[p[1]]), max(rank[p[0]], rank[p[1]])),
    )
    chosen = sorted(best, key=lambda i: rank[i])
    while len(chosen) < m:
        rest = [i for i in order if i not in chosen]
        nxt = min(rest, key=lambda i: (float(sum(A[i, c] for c in chosen)), rank[i]))
        chosen.append(nxt)
    return chosen


# ----------------------------------------------------------------------------- subsets


def subsets_of_size(n: int, size: int, max_subsets: int, rng: np.random.Generator) -> tuple[list[tuple[int, ...]], bool]:
    """All ``size``-subsets of range(n) (sorted tuples), or a seeded sample of ``max_subsets`` distinct ones.

    Returns (subsets, sampled).
    """
    total = math.comb(n, size)
    if total <= max_subsets:
        return list(itertools.combinations(range(n), size)), False
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    while len(out) < max_subsets:
        t = tuple(sorted(int(v) for v in rng.choice(n, size=size, replace=False)))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return sorted(out), True


# ----------------------------------------------------------------------------- data


@dataclass
class EnsembleData:
    """Logits of several models over one clean set, models sorted by name."""

    names: list[str]
    logits: list[np.ndarray]
    labels: np.ndarray
    errors: np.ndarray  # per-model top-1 error, percent
    _cache: dict[tuple[int, ...], float] = field(default_factory=dict, repr=False)
    _buffers: list[np.ndarray] | None = field(default=None, repr=False)  # reused by every subset

    @classmethod
    def from_files(cls, files: Sequence[Logits]) -> "EnsembleData":
        files = sorted(files, key=lambda f: f.name)
        labels = files[0].labels
        return cls(
            names=[f.name for f in files],
            logits=[f.logits for f in files],
            labels=labels,
            errors=np.array([top1_error(f.logits, labels) for f in files]),
        )

    @classmethod
    def from_arrays(cls, names: Sequence[str], logits: Sequence[np.ndarray], labels: np.ndarray) -> "EnsembleData":
        order = sorted(range(len(names)), key=lambda i: names[i])
        lg = [np.asarray(logits[i]) for i in order]
        labels = np.asarray(labels)
        return cls(names=[names[i] for i in order], logits=lg, labels=labels,
                   errors=np.array([top1_error(x, labels) for x in lg]))

    def ensemble_error(self, idx: Sequence[int]) -> float:
        key = tuple(sorted(idx))
        if key not in self._cache:
            if self._buffers is None:
                self._buffers = [np.empty(np.shape(self.logits[0]), dtype=np.float64) for _ in range(2)]
            avg = _average_into([self.logits[i] for i in key], self._buffers)
            self._cache[key] = top1_error(avg, self.labels)
        return self._cache[key]

    def evaluate(self, idx: Sequence[int], S: np.ndarray | None = None) -> dict[str, Any]:
        key = tuple(sorted(idx))
        ens = self.ensemble_error(key)
        member = [float(self.errors[i]) for i in key]
        return {
            "size": len(key),
            "models": "+".join(self.names[i] for i in key),
            "ensemble_error": ens,
            "mean_member_error": float(np.mean(member)),
            "best_member_error": float(np.min(member)),
            "err": error_reduction_rate(ens, member),
            "sat": set_sat(S, key) if S is not None else None,
        }


SUBSET_SCHEMA = {
    "size": pl.Int64, "models": pl.Utf8, "ensemble_error": pl.Float64, "mean_member_error": pl.Float64,
    "best_member_error": pl.Float64, "err": pl.Float64, "sat": pl.Float64, "sampled": pl.Boolean,
}
GRID_SCHEMA = {
    "m": pl.Int64, "k": pl.Int64, "selection": pl.Utf8, "mean_err": pl.Float64, "mean_ensemble_error": pl.Float64,
    "n_draws": pl.Int64, "n_distinct": pl.Int64,
}


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


# ----------------------------------------------------------------------------- SAT / clusters alignment


def align_sat(model_names: Sequence[str], sat_names: Sequence[str], S: np.ndarray, where: str = "the SAT matrix") -> np.ndarray:
    """SAT restricted to ``model_names`` (in that order); names missing from the matrix are an error."""
    index = {n: i for i, n in enumerate(sat_names)}
    missing = [n for n in model_names if n not in index]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MismatchError(
            f"{len(missing)} model(s) of the logits files are not in {where}: {shown}; use the same model names "
            "(satkit logits --name) or a matrix that includes them"
        )
    idx = [index[n] for n in model_names]
    return np.asarray(S, dtype=float)[np.ix_(idx, idx)]


def align_clusters(model_names: Sequence[str], clusters: dict[str, int], where: str = "the clustering") -> np.ndarray:
    missing = [n for n in model_names if n not in clusters]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MismatchError(f"{len(missing)} model(s) of the logits files are not in {where}: {shown}; cluster a matrix that includes them")
    return np.array([int(clusters[n]) for n in model_names])


def read_clusters_table(path: str) -> dict[str, int]:
    """model -> cluster from a ``satkit cluster`` CSV (columns ``model``, ``cluster``)."""
    from satkit.errors import InputFileError
    from satkit.io.tables import read_table

    df = read_table(path, "clusters table")
    if "model" not in df.columns or "cluster" not in df.columns:
        raise InputFileError(f"{path}: a clusters table needs columns 'model' and 'cluster' (as written by satkit cluster)")
    out: dict[str, int] = {}
    for m, cl in zip(df["model"].to_list(), df["cluster"].to_list()):
        if m is None or cl is None:
            raise InputFileError(f"{path}: empty model or cluster cell; every row needs both")
        try:
            # int(2.7) would quietly merge clusters 2 and 2.7; only whole numbers are cluster numbers
            v = float(cl) if not isinstance(cl, bool) else math.nan
            if not (math.isfinite(v) and v == int(v)):
                raise ValueError
        except (TypeError, ValueError):
            raise InputFileError(f"{path}: cluster of {m} is {cl!r}, not an integer") from None
        if str(m) in out and out[str(m)] != int(v):
            raise InputFileError(f"{path}: model {m} is in clusters {out[str(m)]} and {int(v)}; list each model once")
        out[str(m)] = int(v)
    return out


# ----------------------------------------------------------------------------- cluster grid


def _draw_from_clusters(rng: np.random.Generator, members: list[list[int]], combos: list[tuple[int, ...]] | None,
                        m: int, k: int) -> tuple[int, ...]:
    if combos is not None:
        chosen = combos[int(rng.integers(len(combos)))]
    else:  # rejection sampling over K-cluster combinations (only when there are too many to list)
        while True:
            chosen = tuple(sorted(int(v) for v in rng.choice(len(members), size=k, replace=False)))
            if sum(len(members[c]) for c in chosen) >= m:
                break
    picked = [members[c][int(rng.integers(len(members[c])))] for c in chosen]
    pool = [i for c in chosen for i in members[c] if i not in picked]
    extra = rng.choice(len(pool), size=m - k, replace=False) if m > k else []
    return tuple(sorted(picked + [pool[int(e)] for e in extra]))


def cluster_grid(
    data: EnsembleData,
    labels: np.ndarray,
    *,
    max_m: int = MAX_SIZE,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    random_subsets: dict[int, list[tuple[int, ...]]] | None = None,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
) -> pl.DataFrame:
    """Mean ERR of M-model ensembles drawn from K clusters, and of random M-subsets (module docstring)."""
    if draws <= 0:
        raise ParameterError(f"--draws must be positive, got {draws}")
    n = len(data.names)
    cluster_ids = sorted(set(int(v) for v in labels))
    members = [[i for i in range(n) if labels[i] == c] for c in cluster_ids]
    sizes = sorted((len(x) for x in members), reverse=True)
    rows = []
    for m in range(2, min(max_m, n) + 1):
        for k in range(1, m + 1):
            feasible = k <= len(members) and sum(sizes[:k]) >= m
            if not feasible:
                continue
            rng = np.random.default_rng([seed, m, k])
            n_combos = math.comb(len(members), k)
            combos = None
            if n_combos <= _ENUMERATE_LIMIT:
                combos = [cc for cc in itertools.combinations(range(len(members)), k) if sum(len(members[c]) for c in cc) >= m]
            drawn = [_draw_from_clusters(rng, members, combos, m, k) for _ in range(draws)]
            errs = [data.evaluate(t)["err"] for t in drawn]
            ens = [data.ensemble_error(t) for t in drawn]
            rows.append({"m": m, "k": k, "selection": "clusters", "mean_err": _nanmean(errs),
                         "mean_ensemble_error": float(np.mean(ens)), "n_draws": draws, "n_distinct": len(set(drawn))})
        subs = (random_subsets or {}).get(m)
        if subs is None:
            subs, _ = subsets_of_size(n, m, max_subsets, np.random.default_rng([seed, m]))
        errs = [data.evaluate(t)["err"] for t in subs]
        rows.append({"m": m, "k": None, "selection": "random", "mean_err": _nanmean(errs),
                     "mean_ensemble_error": float(np.mean([data.ensemble_error(t) for t in subs])),
                     "n_draws": len(subs), "n_distinct": len(set(subs))})
    return pl.DataFrame(rows, schema=GRID_SCHEMA)


def _nanmean(v: Sequence[float]) -> float | None:
    a = np.asarray(v, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else None


def grid_wide(grid: pl.DataFrame) -> pl.DataFrame:
    """Table-3 layout: one row per M, columns K=1..5 and rand (mean ERR, percent)."""
    if grid.height == 0:
        return pl.DataFrame()
    ms = sorted(set(grid["m"].to_list()))
    max_k = max(ms)
    rows = []
    for m in ms:
        row: dict[str, Any] = {"M": m}
        for k in range(1, max_k + 1):
            sel = grid.filter((pl.col("m") == m) & (pl.col("k") == k))
            row[f"K={k}"] = sel["mean_err"][0] if sel.height else None
        sel = grid.filter((pl.col("m") == m) & (pl.col("selection") == "random"))
        row["rand"] = sel["mean_err"][0] if sel.height else None
        rows.append(row)
    schema = {"M": pl.Int64, **{f"K={k}": pl.Float64 for k in range(1, max_k + 1)}, "rand": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


# ----------------------------------------------------------------------------- whole analysis


@dataclass
class EnsembleReport:
    names: list[str]
    member_errors: dict[str, float]
    subsets: pl.DataFrame
    sampled_sizes: dict[int, int]  # size -> number of subsets evaluated, only for sampled sizes
    correlation: dict[str, float] | None = None
    grid: pl.DataFrame | None = None
    clusters: dict[str, int] | None = None
    selection: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def pairs(self) -> pl.DataFrame:
        return self.subsets.filter(pl.col("size") == 2)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (numbers, no tables of subsets)."""
        out: dict[str, Any] = {
            "models": self.names,
            "member_errors": self.member_errors,
            "n_subsets": {int(s): int(c) for s, c in self.subsets.group_by("size").len().sort("size").iter_rows()},
            "sampled_sizes": {str(k): v for k, v in self.sampled_sizes.items()},
            "err_formula": "ERR(S) = 100 * (1 - Err(ensemble of S) / mean_{m in S} Err(m))",
        }
        if self.correlation is not None:
            out["sat_vs_err_pairs"] = {k: _nan_to_none(v) for k, v in self.correlation.items()}
        if self.grid is not None:
            out["grid"] = [{k: _nan_to_none(v) for k, v in r.items()} for r in self.grid.iter_rows(named=True)]
            out["clusters"] = self.clusters
        if self.selection is not None:
            out["select"] = {k: _nan_to_none(v) for k, v in self.selection.items()}
        out["warnings"] = self.warnings
        return out


def analyze_ensembles(
    files: Sequence[Logits] | EnsembleData,
    *,
    sat: tuple[list[str], np.ndarray] | None = None,
    clusters: dict[str, int] | None = None,
    k: int | None = None,
    cluster_sat: bool = False,
    max_size: int = MAX_SIZE,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    select: int | None = None,
    progress=None,
) -> EnsembleReport:
    """Everything ``satkit ensemble`` computes (see the module docstring).

    ``sat``: (names, matrix) of a SAT matrix holding every model. ``clusters``:
    model -> cluster (e.g. a ``satkit cluster`` table). With ``cluster_sat`` (and
    no ``clusters``), the SAT matrix is clustered with ``spectral_cluster`` (``k``
    clusters; eigengap when ``k`` is None) for the cluster grid.
    ``progress(done, total)`` counts evaluated subsets.
    """
    from satkit.analysis.cluster import check_seed

    if max_subsets <= 0:
        raise ParameterError(f"--max-subsets must be positive, got {max_subsets}")
    if not 2 <= max_size:
        raise ParameterError(f"the largest ensemble size must be at least 2, got {max_size}")
    seed = check_seed(seed)
    data = files if isinstance(files, EnsembleData) else EnsembleData.from_files(files)
    n = len(data.names)
    if n < 2:
        raise ParameterError(f"need logits of at least 2 models for an ensemble, got {n}")
    if len(set(data.names)) != n:
        raise ParameterError("duplicate model names among the logits; give each model once")
    if len(data.labels) == 0:
        raise ParameterError("the logits hold no samples: errors and ERR are undefined; make them on a non-empty clean set")
    if sat is not None:
        if np.shape(sat[1]) != (len(sat[0]), len(sat[0])):
            raise ParameterError(f"SAT matrix shape {np.shape(sat[1])} does not match its {len(sat[0])} names")
        if len(set(sat[0])) != len(sat[0]):
            raise ParameterError("duplicate model names in the SAT matrix; each model must appear once")
        check_sat_matrix(list(sat[0]), sat[1])
    if select is not None and sat is None:
        raise ParameterError("--select needs a SAT matrix (--sat)")
    if select is not None and not 2 <= select <= n:
        raise ParameterError(f"--select must be between 2 and the number of models ({n}), got {select}")
    S = align_sat(data.names, *sat) if sat is not None else None
    warnings: list[str] = []

    # subsets of size 2..max_size
    plan: dict[int, tuple[list[tuple[int, ...]], bool]] = {}
    for size in range(2, min(max_size, n) + 1):
        if size == 2:
            plan[size] = (list(itertools.combinations(range(n), 2)), False)  # every pair, always
        else:
            plan[size] = subsets_of_size(n, size, max_subsets, np.random.default_rng([seed, size]))
    total = sum(len(v[0]) for v in plan.values())
    rows, done = [], 0
    if progress:
        progress(0, total)
    for size, (subs, sampled) in plan.items():
        for t in subs:
            rows.append({**data.evaluate(t, S), "sampled": sampled})
            done += 1
            if progress and (done % 200 == 0 or done == total):
                progress(done, total)
    subsets = pl.DataFrame([{k2: _nan_to_none(v) for k2, v in r.items()} for r in rows], schema=SUBSET_SCHEMA)
    sampled_sizes = {s: len(v[0]) for s, v in plan.items() if v[1]}
    undefined = subsets.filter(pl.col("err").is_null()).height
    if undefined:
        warnings.append(f"{undefined} ensemble(s) whose members make no errors have an undefined ERR (left empty)")

    report = EnsembleReport(
        names=data.names, member_errors={nm: float(e) for nm, e in zip(data.names, data.errors)},
        subsets=subsets, sampled_sizes=sampled_sizes, warnings=warnings,
    )
    if S is not None:
        pairs = subsets.filter(pl.col("size") == 2)
        report.correlation = correlation(pairs["sat"].to_numpy(), pairs["err"].fill_null(float("nan")).to_numpy())
        if report.correlation["n"] < 3:
            warnings.append("fewer than 3 pairs with a defined ERR and varying SAT: no correlation")

    # clustering for the grid
    if clusters is None and cluster_sat:
        if sat is None:
            raise ParameterError("clustering for the cluster grid needs --sat (or give --clusters)")
        from satkit.analysis.cluster import spectral_cluster

        res = spectral_cluster(list(sat[0]), np.asarray(sat[1], dtype=float), k, seed=seed)
        clusters = {nm: int(c) for nm, c in zip(res.names, res.labels)}
    if clusters is not None:
        labels = align_clusters(data.names, clusters)
        report.clusters = {nm: int(c) for nm, c in zip(data.names, labels)}
        report.grid = cluster_grid(
            data, labels, max_m=min(max_size, n), draws=draws, seed=seed,
            random_subsets={s: v[0] for s, v in plan.items()}, max_subsets=max_subsets,
        )

    if select is not None:
        assert S is not None
        chosen = greedy_select(data.names, S, select)
        sel = data.evaluate(chosen, S)
        subs = plan[select][0] if select in plan else subsets_of_size(n, select, max_subsets, np.random.default_rng([seed, select]))[0]
        rand = [data.evaluate(t) for t in subs]
        rand_err = np.array([r["err"] for r in rand], dtype=float)
        finite = rand_err[np.isfinite(rand_err)]
        report.selection = {
            "m": select,
            "models": sel["models"],
            "sat": sel["sat"],
            "ensemble_error": sel["ensemble_error"],
            "mean_member_error": sel["mean_member_error"],
            "err": sel["err"],
            "random_mean_err": float(finite.mean()) if len(finite) else math.nan,
            "random_mean_ensemble_error": float(np.mean([r["ensemble_error"] for r in rand])),
            "random_n": len(subs),
            # share of random subsets the selected set beats or ties on ERR
            "percentile": float(np.mean(finite <= sel["err"]) * 100.0) if len(finite) and sel["err"] == sel["err"] else math.nan,
        }
    return report


# ----------------------------------------------------------------------------- plot


def plot_sat_vs_err(report: EnsembleReport, path) -> None:
    """Scatter of SAT vs ERR over all pairs with the least-squares line (paper Fig. 6)."""
    from satkit.analysis.plots import new_figure, save_figure

    pairs = report.pairs().filter(pl.col("sat").is_not_null() & pl.col("err").is_not_null())
    if pairs.height == 0:
        raise ParameterError("no pair has both a SAT and a defined ERR: nothing to plot (give --sat)")
    x, y = pairs["sat"].to_numpy(), pairs["err"].to_numpy()
    fig = new_figure(6.5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=22, alpha=0.8, edgecolors="black", linewidths=0.3, label="2-model ensembles")
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="crimson", lw=1.5, label=f"least squares: ERR = {slope:.2f} SAT + {intercept:.2f}")
    corr = report.correlation or {}
    title = "SAT vs ERR of 2-model ensembles"
    if corr.get("pearson_r") == corr.get("pearson_r") and corr.get("pearson_r") is not None:
        title += f"\nPearson r = {corr['pearson_r']:.2f} (p = {corr['pearson_p']:.2g}), Spearman = {corr['spearman_r']:.2f} (p = {corr['spearman_p']:.2g})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("SAT (higher = more similar)")
    ax.set_ylabel("ERR (%)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
