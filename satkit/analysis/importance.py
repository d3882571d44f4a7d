"""Which architecture component drives SAT? (paper 4.1, appendix D.1, Fig. 3)

For every unordered pair of models that both have cards, the 13 features are
the per-component Hamming differences (1 when the two cards differ in that
component, 0 when equal; ``~`` is a value like any other, so "not applicable"
vs "Middle" counts as a difference) and the target is SAT(a, b). When the
matrix is asymmetric the target is the mean of SAT(a, b) and SAT(b, a); a pair
with neither direction measured (NaN) is skipped.

Regressor, as in appendix D.1: scikit-learn ``GradientBoostingRegressor`` with
500 stages, max depth 12, learning rate 0.02 and "minimum number of samples" 4,
which we read as ``min_samples_leaf=4`` (the paper does not say leaf or split;
scikit-learn's ``min_samples_split`` must be >= 2 and a leaf minimum is the
regularizer that matters for such deep trees). The model is fit on all pairs
and ``permutation_importance(n_repeats=10)`` is computed on those same pairs,
like the paper. Importance = mean drop of R^2 when a component's column is
shuffled.

Because that is an in-sample measure, the result also carries a held-out R^2:
K-fold cross-validation over pairs (default 5 folds, shuffled, seeded), each
fold refitting the same regressor. A held-out R^2 near or below 0 means the
components do not predict SAT and the importances should not be read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from satkit.analysis.cluster import check_seed
from satkit.cards import COMPONENTS, cards_for
from satkit.errors import ParameterError
from satkit.matrix.sat import check_sat_matrix

MIN_PAIRS = 10  # below this neither the fit nor the cross-validation means anything
MIN_SPREAD = 1e-6  # SAT spread (max - min over pairs) below which the target is constant: nothing to explain


@dataclass
class PairData:
    """Regression data: one row per unordered model pair."""

    X: np.ndarray  # (pairs, 13) 0/1 component differences, columns in COMPONENTS order
    y: np.ndarray  # (pairs,) SAT of the pair
    pairs: list[tuple[str, str]]
    missing: list[str]  # models without a card (left out)


@dataclass
class ImportanceResult:
    """Permutation importance per component, sorted by mean importance (descending)."""

    components: list[str]
    mean: np.ndarray
    std: np.ndarray
    r2_train: float  # in-sample R^2 of the model the importances are computed on
    r2_cv: float  # mean held-out R^2 over the folds
    r2_cv_std: float
    cv_folds: int
    n_pairs: int
    n_models: int
    missing: list[str] = field(default_factory=list)  # models without a card, left out

    def to_frame(self) -> pl.DataFrame:
        """``rank, component, importance_mean, importance_std``."""
        return pl.DataFrame(
            {
                "rank": list(range(1, len(self.components) + 1)),
                "component": self.components,
                "importance_mean": self.mean.astype(float),
                "importance_std": self.std.astype(float),
            }
        )


def pair_features(names: list[str], S: np.ndarray, cards: pl.DataFrame | None = None) -> PairData:
    """Hamming-difference features and SAT target for every pair of models with cards."""
    S = np.asarray(S, dtype=float)
    if S.shape != (len(names), len(names)):
        raise ParameterError(f"similarity matrix shape {S.shape} does not match {len(names)} names")
    if len(set(names)) != len(names):
        raise ParameterError("duplicate model names; each model must appear once")
    check_sat_matrix(names, S)  # NaN (pair not measured) passes and is skipped below
    found, missing = cards_for(list(names), cards)
    card = {r["Model name"]: [r[c] for c in COMPONENTS] for r in found.iter_rows(named=True)}
    index = {n: i for i, n in enumerate(names)}
    have = [n for n in names if n in card]
    X, y, pairs = [], [], []
    for a_pos, a in enumerate(have):
        for b in have[a_pos + 1:]:
            both = [S[index[a], index[b]], S[index[b], index[a]]]
            finite = [v for v in both if np.isfinite(v)]
            if not finite:
                continue  # pair not measured in either direction
            X.append([int(u != v) for u, v in zip(card[a], card[b])])
            y.append(float(np.mean(finite)))
            pairs.append((a, b))
    X_arr = np.array(X, dtype=float).reshape(-1, len(COMPONENTS))
    return PairData(X=X_arr, y=np.array(y, dtype=float), pairs=pairs, missing=missing)


def _regressor(seed: int, n_estimators: int, max_depth: int, min_samples_leaf: int, learning_rate: float):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        learning_rate=learning_rate,
        random_state=seed,
    )


def _unique_row_predictor(model):
    """Wrap a fitted regressor so ``predict`` runs once per distinct feature row.

    The features are 13 bits, so thousands of pairs share a few hundred distinct
    rows; predicting only those gives bit-identical predictions and makes the
    130 predictions of permutation importance several times faster.
    """
    from sklearn.base import BaseEstimator, RegressorMixin

    class UniqueRowPredictor(RegressorMixin, BaseEstimator):
        def __init__(self, fitted=None):
            self.fitted = fitted

        def fit(self, X, y):  # already fitted; present for the estimator protocol
            return self

        def predict(self, X):
            distinct, inverse = np.unique(np.asarray(X), axis=0, return_inverse=True)
            return self.fitted.predict(distinct)[inverse.ravel()]

    return UniqueRowPredictor(model)


def _cv_r2(make, X: np.ndarray, y: np.ndarray, folds: int, seed: int, n_jobs: int | None) -> tuple[float, float]:
    from sklearn.model_selection import KFold, cross_val_score

    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(make(), X, y, cv=cv, scoring="r2", n_jobs=n_jobs)
    return float(np.mean(scores)), float(np.std(scores))


def feature_importance(
    names: list[str],
    S: np.ndarray,
    cards: pl.DataFrame | None = None,
    *,
    seed: int = 0,
    n_estimators: int = 500,
    max_depth: int = 12,
    min_samples_leaf: int = 4,
    learning_rate: float = 0.02,
    n_repeats: int = 10,
    cv_folds: int = 5,
    n_jobs: int | None = None,
) -> ImportanceResult:
    """Permutation importance of each component for predicting SAT (paper Fig. 3; see module docstring).

    ``n_jobs`` runs the cross-validation folds in parallel (results do not depend on it).
    """
    from sklearn.inspection import permutation_importance

    if cv_folds < 2:
        raise ParameterError(f"cv_folds must be at least 2, got {cv_folds}")
    seed = check_seed(seed)
    data = pair_features(names, S, cards)
    n_pairs = len(data.y)
    if n_pairs < max(MIN_PAIRS, cv_folds):
        raise ParameterError(
            f"only {n_pairs} model pair(s) with cards on both sides; need at least {max(MIN_PAIRS, cv_folds)} "
            f"(models without a card: {', '.join(data.missing[:5]) or 'none'})"
        )

    spread = float(np.ptp(data.y))
    if spread < MIN_SPREAD:
        raise ParameterError(
            f"all {n_pairs} model pairs have the same SAT ({data.y[0]:.4g}, spread {spread:.2g}), so the importance "
            "of the components cannot be estimated; it needs pairs that differ in SAT"
        )

    def make():
        return _regressor(seed, n_estimators, max_depth, min_samples_leaf, learning_rate)

    model = make().fit(data.X, data.y)
    perm = permutation_importance(
        _unique_row_predictor(model), data.X, data.y, n_repeats=n_repeats, random_state=seed, scoring="r2"
    )
    r2_cv, r2_cv_std = _cv_r2(make, data.X, data.y, cv_folds, seed, n_jobs)
    order = sorted(range(len(COMPONENTS)), key=lambda j: (-perm.importances_mean[j], COMPONENTS[j]))
    return ImportanceResult(
        components=[COMPONENTS[j] for j in order],
        mean=perm.importances_mean[order],
        std=perm.importances_std[order],
        r2_train=float(model.score(data.X, data.y)),
        r2_cv=r2_cv,
        r2_cv_std=r2_cv_std,
        cv_folds=cv_folds,
        n_pairs=n_pairs,
        n_models=len({m for p in data.pairs for m in p}),
        missing=data.missing,
    )


def plot_importance(result: ImportanceResult, path: str | os.PathLike) -> None:
    """Horizontal bar plot of the importances with their std (paper Fig. 3); .png/.svg/.pdf by suffix."""
    from satkit.analysis.plots import new_figure, save_figure

    n = len(result.components)
    fig = new_figure(7, 1.0 + 0.35 * n)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(n)[::-1]  # most important on top
    ax.barh(pos, result.mean, xerr=result.std, color="tab:blue", ecolor="black", capsize=2)
    ax.set_yticks(pos, result.components)
    ax.axvline(0.0, color="black", lw=0.6)
    ax.set_xlabel("permutation importance (mean drop in R^2)")
    ax.set_title(
        f"{result.n_pairs} pairs of {result.n_models} models; "
        f"held-out R^2 {result.r2_cv:.2f} ± {result.r2_cv_std:.2f} ({result.cv_folds}-fold)"
    )
    save_figure(fig, path)
