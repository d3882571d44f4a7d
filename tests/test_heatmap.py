"""The SAT heatmap: order (cluster, hierarchical), sizes 3..250 models, formats, hostile names, `matrix --plot`."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest

from satkit.analysis.heatmap import heatmap_order, plot_sat_heatmap, sat_heatmap_figure, sat_heatmap_svg
from satkit.errors import ParameterError
from tests.cli_helpers import assert_clean_error, run

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF", ".svg": b"<?xml"}


def blocks(sizes=(3, 4, 3), seed=0, within=3.6, across=2.0):
    """SAT high inside planted blocks, low across, models shuffled; returns (names, S, block of each name)."""
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(len(sizes)), sizes)
    n = len(lab)
    S = np.where(lab[:, None] == lab[None, :], within, across) + rng.normal(0, 0.1, (n, n))
    S = (S + S.T) / 2
    np.fill_diagonal(S, math.log(100))
    perm = rng.permutation(n)
    names = [f"m{i:03d}" for i in range(n)]
    return names, S[np.ix_(perm, perm)], dict(zip(names, (lab[perm] + 1).tolist()))


def contiguous(order, names, group):
    seq = [group[names[i]] for i in order]
    changes = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
    return changes == len(set(seq)) - 1


def test_hierarchical_order_keeps_planted_blocks_together():
    names, S, group = blocks()
    order, Z = heatmap_order(names, S)
    assert sorted(order) == list(range(len(names))) and Z is not None
    assert contiguous(order, names, group)


def test_cluster_order_groups_by_cluster_number():
    names, S, group = blocks()
    order, Z = heatmap_order(names, S, clusters=group)
    assert Z is None  # no tree with clusters
    seq = [group[names[i]] for i in order]
    assert seq == sorted(seq)
    _, layout = sat_heatmap_figure(names, S, clusters=[group[m] for m in names])
    assert layout.clusters == seq


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_formats(tmp_path, suffix):
    names, S, group = blocks()
    p = tmp_path / f"sat{suffix}"
    plot_sat_heatmap(names, S, p, clusters=group)
    assert p.read_bytes().startswith(MAGIC[suffix])


def test_unknown_format_and_out_of_range_are_one_line_errors(tmp_path):
    names, S, _ = blocks()
    with pytest.raises(ParameterError, match="unknown plot format"):
        plot_sat_heatmap(names, S, tmp_path / "sat.jpg")
    bad = S.copy()
    bad[0, 1] = 1e6
    with pytest.raises(ParameterError, match="out of range"):
        plot_sat_heatmap(names, bad, tmp_path / "sat.png")
    with pytest.raises(ParameterError, match="no cluster for"):
        plot_sat_heatmap(names, S, tmp_path / "sat.png", clusters={names[0]: 1})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("n", [3, 10, 60, 100, 172, 173, 250])
def test_sizes_every_name_up_to_172_models(n):
    rng = np.random.default_rng(n)
    S = rng.uniform(1.0, 3.5, (n, n))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 4.6)
    names = [f"vit_base_patch16_224.variant_{i:03d}" for i in range(n)]
    fig, layout = sat_heatmap_figure(names, S)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    w, h = fig.get_size_inches()
    assert max(w, h) <= 24 + 3  # the matrix at most 24 in, plus the colour bar / tree
    if n <= 172:
        assert layout.label_every == 1 and len(labels) == n
        assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 6
    else:
        assert layout.label_every > 1 and len(labels) == math.ceil(n / layout.label_every)
    assert len(fig.axes) >= 3  # matrix, tree, colour bar (+ its percent axis)


def test_nan_cells_and_hostile_names_draw(tmp_path):
    names = ["$\\frac{a$", "b<script>alert(1)</script>", "c\x1b[31m", "d"]
    S = np.array([[4.6, np.nan, 2.0, 1.0], [np.nan, 4.6, 2.5, 1.2], [2.0, 2.5, 4.5, 3.0], [1.0, 1.2, 3.0, 4.6]])
    plot_sat_heatmap(names, S, tmp_path / "sat.png")
    svg, layout = sat_heatmap_svg(names, S)
    assert "<script" not in svg  # names become glyph outlines; matplotlib escapes any text it writes
    assert len(re.findall(r'<g id="satcell-\d+-\d+">', svg)) == 16


def test_colour_bar_has_percent_ticks():
    names, S, _ = blocks()
    fig, _ = sat_heatmap_figure(names, S)
    fig.canvas.draw()
    axes = [*fig.axes, *(c for a in fig.axes for c in a.child_axes)]
    texts = [t.get_text() for a in axes for t in a.get_yticklabels()]
    assert any(t.endswith(" %") for t in texts), texts


def transfer_csv(path, names, rate=0.3, n_both=50):
    rows = [{"source": a, "target": b, "n_both": n_both, "n_fooled": n_both if a == b else int(rate * n_both * (1 + i % 2))}
            for i, (a, b) in enumerate((a, b) for a in names for b in names)]
    # SAT needs the same |X_AB| both ways; the fooled counts may differ
    pl.DataFrame(rows).write_csv(path)


def test_matrix_plot_cli(tmp_path):
    t = tmp_path / "t.csv"
    transfer_csv(t, ["a", "b", "c"])
    for suffix in (".png", ".svg", ".pdf"):
        out = tmp_path / f"sat{suffix}"
        run("matrix", t, "-o", tmp_path / "sat.csv", "--plot", out, "--no-show")
        assert out.read_bytes().startswith(MAGIC[suffix])


def test_matrix_plot_cli_refuses_before_work(tmp_path):
    t = tmp_path / "t.csv"
    transfer_csv(t, ["a", "b", "c"])
    assert_clean_error(run("matrix", t, "-o", tmp_path / "sat.csv", "--plot", tmp_path / "sat.jpg", ok=False), "unknown plot format")
    assert_clean_error(run("matrix", t, "-o", tmp_path / "sat.csv", "--plot", t, ok=False), "also an input")
    assert_clean_error(run("matrix", t, "-o", tmp_path / "sat.csv", "--plot", tmp_path / "no" / "sat.png", ok=False), "does not exist")
    assert not (tmp_path / "sat.csv").exists()
