"""Two SAT matrices over the same models: do they tell the same story? (``satkit compare``)

Used to check that SAT is not an artefact of one attack (the paper's appendix
B.1 correlates PGD's SAT with AutoAttack's, r = 0.98), of the sample, or of eps.

- Pairs: the off-diagonal upper triangle of each matrix, after symmetrizing
  ``(S + S^T) / 2`` (SAT is symmetric; a one-sided matrix is averaged), over the
  models both matrices hold (matched by name, any order).
- Pearson and Spearman over those pairs, with scipy's two-sided p-values. Those
  p-values assume independent pairs, which pairs sharing a model are not; the
  Mantel test below does not.
- Mantel test: the models of the second matrix are permuted (rows and columns
  together) ``permutations`` times; ``mantel_p = (1 + #{r_perm >= r}) / (1 +
  permutations)``, one-sided (is the agreement larger than chance?).
- ARI between the two matrices' spectral clusterings at ``k`` (given, or the
  first matrix's eigengap choice, used for both), with the clustering method given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satkit.analysis.cluster import spectral_cluster
from satkit.errors import MismatchError, ParameterError, SatkitError
from satkit.limits import PERMUTATIONS
from satkit.settings import CLUSTER_METHOD

MIN_MODELS = 3  # fewer models give fewer than 3 pairs: no correlation to speak of


@dataclass
class CompareResult:
    names: list[str]  # the common models, sorted
    a: np.ndarray  # pair values of the first matrix (upper triangle, row-major)
    b: np.ndarray
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    mantel_p: float
    permutations: int
    k: int | None = None
    ari: float | None = None
    method: str = CLUSTER_METHOD
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return int(len(self.a))

    def summary(self) -> dict[str, Any]:
        def num(v):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        return {
            "pearson": num(self.pearson), "pearson_p": num(self.pearson_p), "spearman": num(self.spearman),
            "spearman_p": num(self.spearman_p), "mantel_p": num(self.mantel_p), "permutations": self.permutations,
            "n_pairs": self.n_pairs, "n_models": len(self.names), "models": self.names, "k": self.k, "ari": num(self.ari),
            "cluster_method": self.method, "only_in_first": self.only_in_a, "only_in_second": self.only_in_b,
        }


def _aligned(names_a: list[str], A: np.ndarray, names_b: list[str], B: np.ndarray):
    common = sorted(set(names_a) & set(names_b))
    if not common:
        raise MismatchError("the two matrices share no model: compare matrices over the same models")
    if len(common) < MIN_MODELS:
        raise MismatchError(f"the two matrices share only {len(common)} model(s) ({', '.join(common)}); "
                            f"comparing needs at least {MIN_MODELS}")
    ia = [names_a.index(n) for n in common]
    ib = [names_b.index(n) for n in common]
    A = np.asarray(A, dtype=float)[np.ix_(ia, ia)]
    B = np.asarray(B, dtype=float)[np.ix_(ib, ib)]
    return common, (A + A.T) / 2, (B + B.T) / 2


def _upper(M: np.ndarray) -> np.ndarray:
    return M[np.triu_indices(len(M), 1)]


def mantel_p(A: np.ndarray, B: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """(Pearson r of the upper triangles, one-sided permutation p-value) for symmetric A, B."""
    n = len(A)
    iu = np.triu_indices(n, 1)
    a = A[iu]
    a = (a - a.mean()) / np.linalg.norm(a - a.mean())

    def r_of(b: np.ndarray) -> np.ndarray:  # rows: one Pearson r per row of b
        b = b - b.mean(axis=-1, keepdims=True)
        return (b @ a) / np.linalg.norm(b, axis=-1)

    r = float(r_of(B[iu][None, :])[0])
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < permutations:  # chunks keep memory at O(chunk * pairs)
        m = min(1000, permutations - done)
        perms = np.argsort(rng.random((m, n)), axis=1)
        Bp = B[perms[:, :, None], perms[:, None, :]]  # (m, n, n): rows and columns permuted together
        hits += int((r_of(Bp[:, iu[0], iu[1]]) >= r - 1e-12).sum())
        done += m
    return r, (1 + hits) / (1 + permutations)


def compare_matrices(
    names_a: list[str], A: np.ndarray, names_b: list[str], B: np.ndarray, *,
    k: int | None = None, permutations: int = 9999, seed: int = 0, method: str = CLUSTER_METHOD,
) -> CompareResult:
    """Agreement of two SAT matrices (see the module docstring); one-line errors for unusable input."""
    from scipy import stats

    permutations = PERMUTATIONS.check(permutations)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"--seed must be a whole number >= 0, got {seed!r}")
    names_a, names_b = [str(n) for n in names_a], [str(n) for n in names_b]
    common, SA, SB = _aligned(names_a, A, names_b, B)
    a, b = _upper(SA), _upper(SB)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ParameterError("a matrix has empty or non-finite cells among the common models; compare complete matrices")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ParameterError("every pair has the same value in one of the matrices: a correlation is not defined")
    pr, sr = stats.pearsonr(a, b), stats.spearmanr(a, b)
    r, p_mantel = mantel_p(SA, SB, permutations, seed)
    res = CompareResult(
        names=common, a=a, b=b, pearson=r, pearson_p=float(pr.pvalue), spearman=float(sr.statistic),
        spearman_p=float(sr.pvalue), mantel_p=p_mantel, permutations=permutations, method=method,
        only_in_a=sorted(set(names_a) - set(common)), only_in_b=sorted(set(names_b) - set(common)),
    )
    from sklearn.metrics import adjusted_rand_score

    try:
        ca = spectral_cluster(common, SA, k, seed=seed, method=method)
        cb = spectral_cluster(common, SB, ca.k, seed=seed, method=method)
    except SatkitError as e:  # e.g. a matrix without cluster structure: the correlations still stand
        if k is not None:
            raise
        res.notes.append(f"no clustering comparison: {e}")
        return res
    res.k, res.ari = ca.k, float(adjusted_rand_score(ca.labels, cb.labels))
    return res


def plot_compare(result: CompareResult, path, labels: tuple[str, str] = ("first", "second")) -> None:
    """Scatter of the pairs' values, first matrix against second, with the identity line."""
    from satkit.analysis.plots import new_figure, save_figure

    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(result.a, result.b, s=14, alpha=0.7)
    lo, hi = float(min(result.a.min(), result.b.min())), float(max(result.a.max(), result.b.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"SAT, {labels[0]}")
    ax.set_ylabel(f"SAT, {labels[1]}")
    ax.set_title(f"{result.n_pairs} pairs: Pearson {result.pearson:.3f}, Spearman {result.spearman:.3f}, "
                 f"Mantel p {result.mantel_p:.2g}", fontsize=9)
    save_figure(fig, path)
