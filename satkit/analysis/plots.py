"""Figures: no pyplot (no global backend, no figure registry), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from satkit.errors import ParameterError

SUFFIX_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib Figure atomically; the format follows the suffix (.png, .svg, .pdf)."""
    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ParameterError(f"{path}: unknown plot format; use a .png, .svg or .pdf file name")
    import matplotlib

    from satkit.io.atomic import atomic_output

    # no dates and fixed SVG ids: the same figure gives the same bytes on a rerun
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    with atomic_output(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "satkit"}):
        fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150, metadata=metadata)


def new_figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot, so no global backend switch and
    # no figure registry that leaks memory in long-running processes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig
