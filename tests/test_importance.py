"""Component importance: pair features by hand, a planted driver ranks first, R^2 diagnostic."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from satkit.analysis.importance import feature_importance, pair_features, plot_importance
from satkit.cards import COMPONENTS, NAME
from satkit.errors import ParameterError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_cards(n: int, seed: int) -> pl.DataFrame:
    """n models, every component drawn independently from three values."""
    rng = np.random.default_rng(seed)
    data = {NAME: [f"m{i:02d}" for i in range(n)]}
    for c in COMPONENTS:
        data[c] = [f"v{v}" for v in rng.integers(0, 3, n)]
    return pl.DataFrame(data)


def sat_driven_by(cards: pl.DataFrame, component: str, seed: int, noise: float = 0.05) -> np.ndarray:
    """SAT = 4 - 1.5 * [cards differ in `component`] + noise, symmetric."""
    rng = np.random.default_rng(seed)
    v = np.array(cards[component].to_list())
    S = 4.0 - 1.5 * (v[:, None] != v[None, :]) + rng.normal(0, noise, (len(v), len(v)))
    return (S + S.T) / 2


@pytest.fixture(scope="module")
def planted():
    cards = random_cards(24, seed=0)
    S = sat_driven_by(cards, "Normalization", seed=1)
    return cards, S, feature_importance(cards[NAME].to_list(), S, cards, seed=0)


def test_planted_component_ranks_first(planted):
    _, _, res = planted
    assert res.components[0] == "Normalization"
    assert sorted(res.components) == sorted(COMPONENTS)
    top = res.mean[0]
    assert top > 0.5
    others = dict(zip(res.components[1:], res.mean[1:]))
    assert max(abs(v) for v in others.values()) < 0.05 * top  # components that do not drive SAT
    assert res.r2_cv > 0.8  # held-out fit confirms the importances mean something
    assert res.n_pairs == 24 * 23 // 2 and res.n_models == 24 and res.missing == []
    table = res.to_frame()
    assert table.columns == ["rank", "component", "importance_mean", "importance_std"]
    assert table["importance_mean"].to_list() == sorted(table["importance_mean"].to_list(), reverse=True)


def test_unpredictable_target_has_low_held_out_r2():
    cards = random_cards(24, seed=2)
    rng = np.random.default_rng(3)
    S = rng.normal(3.0, 0.5, (24, 24))
    S = (S + S.T) / 2
    res = feature_importance(cards[NAME].to_list(), S, cards, seed=0, n_estimators=100)
    assert res.r2_cv < 0.2
    assert res.r2_train > res.r2_cv  # the in-sample fit alone would mislead


def test_pair_features_by_hand():
    base = {c: "same" for c in COMPONENTS}
    rows = [
        {NAME: "a", **base},
        {NAME: "b", **base, "Stem layer": "other"},
        {NAME: "c", **base, "Stem layer": "other", "DW conv": "~"},
    ]
    cards = pl.DataFrame(rows).select([NAME, *COMPONENTS])
    names = ["a", "b", "c", "nocard"]
    S = np.array(
        [
            [4.6, 3.0, 2.0, 1.0],
            [3.4, 4.6, np.nan, 1.0],  # asymmetric (a, b); (b, c) measured one way only
            [2.0, 2.5, 4.6, 1.0],
            [1.0, 1.0, 1.0, 4.6],
        ]
    )
    data = pair_features(names, S, cards)
    assert data.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    assert data.missing == ["nocard"]
    stem, dw = COMPONENTS.index("Stem layer"), COMPONENTS.index("DW conv")
    expect = np.zeros((3, len(COMPONENTS)))
    expect[0, stem] = 1
    expect[1, stem] = expect[1, dw] = 1
    expect[2, dw] = 1
    assert np.array_equal(data.X, expect)
    assert data.y.tolist() == pytest.approx([3.2, 2.0, 2.5])


def test_too_few_pairs():
    cards = random_cards(4, seed=0)
    S = np.full((4, 4), 3.0)
    with pytest.raises(ParameterError, match="only 6 model pair"):
        feature_importance(cards[NAME].to_list(), S, cards)


def test_bar_plot_png_and_svg(planted, tmp_path):
    _, _, res = planted
    plot_importance(res, tmp_path / "imp.png")
    plot_importance(res, tmp_path / "imp.svg")
    assert (tmp_path / "imp.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "<svg" in (tmp_path / "imp.svg").read_text()[:2000]
