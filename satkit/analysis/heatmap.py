"""The SAT matrix as a picture: a heatmap ordered by cluster, or by a hierarchical ordering with its dendrogram.

Reading guide (what the figure shows and why):

* **Order.** With clusters, models are grouped by cluster (1, 2, ...) and
  boundaries drawn between groups; without, rows and columns follow the leaf
  order of an average-linkage (UPGMA) tree, optimally ordered so that similar
  models sit next to each other, and the tree is drawn above the matrix.
  The tree's distance is ``max off-diagonal SAT - SAT`` of the symmetrized
  matrix: SAT is a log similarity, so its differences are comparable along
  the whole scale. Within a cluster, models keep the tree's order.
* **Colour.** Viridis, brighter = more similar, spanning the off-diagonal
  values: the diagonal (a model against its own attack, near ln 100) would
  otherwise take the top of the scale and flatten every other contrast. The
  diagonal is drawn grey (hatched up to 30 models) and keeps its number when
  numbers are shown. The colour bar is labelled in SAT on the right and in
  percent transfer (``exp(SAT)``: SAT is the natural log of a percentage) on the left. Cells without a value
  (an unmeasured pair) are white.
* **Size.** The canvas grows with the number of models so that every model
  is named on both axes: 0.3 in per model up to 30 models, 0.2 in per model
  after that, at most 24 in (reached at 105 models). Names are never smaller
  than 6 pt: every model is named up to 172 models, every k-th beyond (k = 2
  from 173). Numbers are written in the cells up to 12 models.

No pyplot (see :mod:`satkit.analysis.plots`); model names are drawn as plain
text (a ``$`` in a name is not taken for mathtext).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from satkit.analysis.plots import new_figure, save_figure
from satkit.errors import ParameterError
from satkit.matrix.sat import DEFAULT_EPS_S, check_sat_matrix

CELL_IDS = "satcell-{i}-{j}"  # SVG group id of the cell in display row i, column j (only with cell_ids)
ANNOTATE_MAX = 12  # numbers in the cells up to this many models
HATCH_MAX = 30  # diagonal hatched up to this many models
MAX_SIDE = 24.0  # inches
MIN_LABEL_PT = 6.0


@dataclass
class HeatmapLayout:
    """Where each model went: ``order[p]`` is the index (into the caller's names) shown at position ``p``."""

    order: list[int]
    clusters: list[int] | None  # cluster of each displayed model, in display order (None: hierarchical)
    label_every: int  # 1: every model named


def _symmetric(S: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        A = np.where(np.isnan(S), S.T, S)
        return np.where(np.isnan(A.T), A, (A + A.T) / 2.0)


def tree(S: np.ndarray):
    """Average-linkage tree of the models (scipy linkage matrix), optimally leaf-ordered; None for < 2 models."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    n = S.shape[0]
    if n < 2:
        return None
    A = _symmetric(S)
    off = A[~np.eye(n, dtype=bool)]
    finite = off[np.isfinite(off)]
    top = float(finite.max()) if finite.size else 0.0
    D = top - A
    span = float(np.ptp(finite)) if finite.size else 0.0
    D[~np.isfinite(D)] = span + 1.0  # an unmeasured pair: farther apart than any measured one
    D = np.clip(D, 0.0, None)
    np.fill_diagonal(D, 0.0)
    return linkage(squareform(D, checks=False), method="average", optimal_ordering=n > 2)


def _leaf_order(Z, n: int) -> list[int]:
    from scipy.cluster.hierarchy import leaves_list

    return list(range(n)) if Z is None else [int(i) for i in leaves_list(Z)]


def heatmap_order(names: Sequence[str], S: np.ndarray, clusters: Mapping[str, int] | Sequence[int] | None = None):
    """(display order, tree or None): by cluster then tree order with ``clusters``, else tree order (with the tree)."""
    n = len(names)
    Z = tree(S)
    leaves = _leaf_order(Z, n)
    if clusters is None:
        return leaves, Z
    labels = _labels(names, clusters)
    pos = {i: p for p, i in enumerate(leaves)}
    return sorted(range(n), key=lambda i: (labels[i], pos[i])), None


def _labels(names: Sequence[str], clusters: Mapping[str, int] | Sequence[int]) -> list[int]:
    if isinstance(clusters, Mapping):
        missing = [m for m in names if m not in clusters]
        if missing:
            raise ParameterError(f"no cluster for {', '.join(missing[:5])}; give a cluster for every model in the matrix")
        return [int(clusters[m]) for m in names]
    labels = [int(c) for c in clusters]
    if len(labels) != len(names):
        raise ParameterError(f"{len(labels)} cluster labels for {len(names)} models; give one per model")
    return labels


def _plain(text: str) -> str:
    from satkit.provenance import printable

    # control characters have no glyph (shown as escapes, as on the terminal); matplotlib
    # reads text between two $ as mathtext, and a model name is never math
    return printable(text).replace("$", r"\$")


def _common_prefix(names: Sequence[str]) -> str:
    """A ``family/`` prefix every name shares (e.g. ``digits/``), left off the axis labels."""
    heads = {n.split("/", 1)[0] + "/" for n in names if "/" in n}
    if len(heads) == 1 and all("/" in n for n in names):
        head = heads.pop()
        if all(len(n) > len(head) for n in names):
            return head
    return ""


def _side(n: int) -> float:
    raw = 0.3 * n if n <= 30 else 9.0 + 0.2 * (n - 30)
    return float(min(max(raw, 3.2), MAX_SIDE))


def _percent_ticks(vmin: float, vmax: float) -> list[float]:
    """Round percentages inside the colour bar's range: 1-2-5 steps, finer when the range is narrow."""
    lo, hi = math.exp(vmin), math.exp(vmax)
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [float(f"{m * 10.0**e:.6g}") for e in range(-3, 3) for m in mantissas]
        ticks = [t for t in ticks if lo <= t <= min(hi, 100.0)]
        if len(ticks) >= 3:
            return ticks[:: max(1, math.ceil(len(ticks) / 8))]
    return ticks if len(ticks) >= 2 else [lo, hi]


def _fmt_percent(p: float) -> str:
    return f"{p:.3g} %"


def sat_heatmap_figure(
    names: Sequence[str],
    S: np.ndarray,
    *,
    clusters: Mapping[str, int] | Sequence[int] | None = None,
    eps_s: float = DEFAULT_EPS_S,
    title: str | None = None,
    cell_ids: bool = False,
):
    """The heatmap as a matplotlib Figure and its :class:`HeatmapLayout` (see the module docstring).

    ``cell_ids`` draws every cell as its own patch with the SVG id ``satcell-<row>-<col>``
    (display positions), so an SVG of it can carry per-cell tooltips.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    names = [str(m) for m in names]
    n = len(names)
    if n < 1:
        raise ParameterError("the SAT matrix has no models; nothing to draw")
    S = check_sat_matrix(names, S)
    order, Z = heatmap_order(names, S, clusters)
    labels = [_labels(names, clusters)[i] for i in order] if clusters is not None else None
    M = S[np.ix_(order, order)]
    shown = [names[i] for i in order]

    diag = np.eye(n, dtype=bool)
    off = M[~diag & np.isfinite(M)]
    if off.size:
        vmin, vmax = float(off.min()), float(off.max())
    else:
        d = M[np.isfinite(M)]
        vmin = vmax = float(d.mean()) if d.size else math.log(100.0)
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.25, vmax + 0.25
    norm = Normalize(vmin=vmin, vmax=vmax)
    cmap = colormaps["viridis"].with_extremes(bad="white")

    side = _side(n)
    cell_pt = side * 72.0 / n
    label_every = max(1, math.ceil(MIN_LABEL_PT / (0.6 * cell_pt))) if 0.6 * cell_pt < MIN_LABEL_PT else 1
    fontsize = float(min(10.0, max(MIN_LABEL_PT, 0.6 * cell_pt)))
    top_h = (min(1.4, 0.35 + 0.08 * side) if Z is not None else 0.0) + (0.22 if labels is not None else 0.0)
    small = min(12.0, 8.0 + 0.15 * side)  # colour bar and title text grow a little with the canvas
    cbar_gap, cbar_w, right = 0.75, 0.2 + 0.01 * side, 1.0
    W, H = side + cbar_gap + cbar_w + right, side + top_h + 0.1
    fig = new_figure(W, H)

    def box(x, y, w, h):  # inches from the lower left -> figure fractions
        return [x / W, y / H, w / W, h / H]

    ax = fig.add_axes(box(0, 0, side, side))
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    if cell_ids:
        for i in range(n):
            for j in range(n):
                v = M[i, j]
                color = "#d9d9d9" if i == j else cmap(norm(v)) if np.isfinite(v) else "white"
                r = Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=color, edgecolor="none")
                r.set_gid(CELL_IDS.format(i=i, j=j))
                ax.add_patch(r)
        mappable = _mappable(cmap, norm)
    else:
        edges = np.arange(n + 1) - 0.5
        mappable = ax.pcolormesh(edges, edges, np.ma.masked_invalid(np.where(diag, np.nan, M)), cmap=cmap, norm=norm,
                                 edgecolors="face", linewidth=0)
        for i in range(n):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor="#d9d9d9", edgecolor="none"))
    if n <= HATCH_MAX:
        for i in range(n):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="#8c8c8c", hatch="///", linewidth=0))
    if n <= ANNOTATE_MAX:
        size = min(9.0, max(5.0, 0.28 * cell_pt))
        for i in range(n):
            for j in range(n):
                v = M[i, j]
                if not np.isfinite(v):
                    continue
                dark = i == j or _luminance(cmap(norm(v))) > 0.5
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=size, color="black" if dark else "white")

    if labels is not None:
        lw = 2.0 if n <= 30 else 1.2
        for b in np.flatnonzero(np.diff(labels)) + 0.5:
            ax.axhline(b, color="white", lw=lw)
            ax.axvline(b, color="white", lw=lw)

    prefix = _common_prefix(shown)
    ticks = list(range(0, n, label_every))
    tick_names = [_plain(shown[p][len(prefix):]) for p in ticks]
    ax.set_xticks(ticks, tick_names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, tick_names, fontsize=fontsize)
    ax.tick_params(length=2 if label_every == 1 else 3)
    for s in ax.spines.values():
        s.set_visible(False)

    y = side
    if labels is not None:
        strip = fig.add_axes(box(0, y + 0.04, side, 0.16))
        _cluster_strip(strip, labels, n, fontsize)
        y += 0.22
    if Z is not None:
        dax = fig.add_axes(box(0, y + 0.02, side, top_h - 0.04))
        _dendrogram(dax, Z, n)

    cax = fig.add_axes(box(side + cbar_gap, side * 0.15, cbar_w, side * 0.7 if n > 6 else side * 0.85))
    cb = fig.colorbar(mappable, cax=cax)
    cb.set_label("SAT = ln(transfer %)", fontsize=small + 1)
    cb.ax.tick_params(labelsize=small)
    pct = cax.secondary_yaxis("left", functions=(_to_percent, _to_sat))
    pct.set_yticks(_percent_ticks(vmin, vmax), [_fmt_percent(t) for t in _percent_ticks(vmin, vmax)])
    pct.tick_params(labelsize=small - 1)
    pct.set_ylabel("transfer", fontsize=small)

    heading = title if title is not None else f"SAT of {n} model{'s' if n != 1 else ''}"
    if prefix:
        heading += f" ({prefix}...)"
    heading += ", by cluster" if labels is not None else (", hierarchical order" if Z is not None else "")
    fig.text(0, (side + top_h + 0.1) / H, _plain(heading), fontsize=small + 3, ha="left", va="bottom")
    if eps_s and np.isfinite(M).any() and np.nanmin(M) <= math.log(eps_s) + 1e-12:
        fig.text(side + cbar_gap, side * 0.15 / H - 0.3 / H, f"floor: SAT = ln {eps_s:g}\n(<= {eps_s:g} % transfer)",
                 fontsize=small - 1, ha="left", va="top")
    return fig, HeatmapLayout(order=order, clusters=labels, label_every=label_every)


def _to_percent(s):
    return np.exp(s)  # SAT = ln(percent)


def _to_sat(p):
    return np.log(np.maximum(p, 1e-300))


def _luminance(rgba) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    m = ScalarMappable(norm=norm, cmap=cmap)
    m.set_array([])
    return m


def _cluster_strip(ax, labels: list[int], n: int, fontsize: float) -> None:
    from matplotlib.patches import Rectangle

    from satkit.analysis.cluster import _cluster_cmap

    k = max(labels)
    colors = _cluster_cmap(k)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, 1)
    start = 0
    for p in range(1, n + 1):
        if p == n or labels[p] != labels[start]:
            c = labels[start]
            ax.add_patch(Rectangle((start - 0.5, 0), p - start, 1, facecolor=colors(c - 1), edgecolor="white", lw=1))
            if (p - start) * (ax.figure.get_figwidth() * 72.0 / n) >= 2.2 * fontsize:
                ax.text((start + p - 1) / 2, 0.5, str(c), ha="center", va="center", fontsize=min(fontsize, 8), color="black")
            start = p
    ax.set_axis_off()


def _dendrogram(ax, Z, n: int) -> None:
    from scipy.cluster.hierarchy import dendrogram

    d = dendrogram(Z, no_plot=True)
    for xs, ys in zip(d["icoord"], d["dcoord"]):
        ax.plot([(x - 5.0) / 10.0 for x in xs], ys, color="#444444", lw=0.8)
    ax.set_xlim(-0.5, n - 0.5)
    top = float(np.max(Z[:, 2])) if len(Z) else 1.0
    ax.set_ylim(0, top * 1.05 if top > 0 else 1.0)
    ax.set_axis_off()


@contextlib.contextmanager
def _quiet_glyphs():
    """A name in a script the font lacks draws as boxes; the library does not warn on stderr about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        yield


def plot_sat_heatmap(
    names: Sequence[str],
    S: np.ndarray,
    path: str | os.PathLike,
    *,
    clusters: Mapping[str, int] | Sequence[int] | None = None,
    eps_s: float = DEFAULT_EPS_S,
    title: str | None = None,
) -> HeatmapLayout:
    """Write the SAT heatmap to ``path`` (.png, .svg or .pdf, atomically); see the module docstring."""
    fig, layout = sat_heatmap_figure(names, S, clusters=clusters, eps_s=eps_s, title=title)
    with _quiet_glyphs():
        save_figure(fig, path)
    return layout


def sat_heatmap_svg(
    names: Sequence[str],
    S: np.ndarray,
    *,
    clusters: Mapping[str, int] | Sequence[int] | None = None,
    eps_s: float = DEFAULT_EPS_S,
    title: str | None = None,
) -> tuple[str, HeatmapLayout]:
    """The heatmap as SVG text, every cell a group ``satcell-<row>-<col>`` (display positions; see the layout)."""
    fig, layout = sat_heatmap_figure(names, S, clusters=clusters, eps_s=eps_s, title=title, cell_ids=True)
    buf = io.StringIO()
    # no date and a fixed hash salt: the same matrix gives the same SVG
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "satkit", "svg.fonttype": "path"}), _quiet_glyphs():
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buf.getvalue(), layout
