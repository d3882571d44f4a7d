"""Rich rendering of matrices (human output, stderr; full width and plain off a terminal)."""

from __future__ import annotations

import math

import numpy as np
from rich.console import Console
from rich.table import Table

from satkit.cli.common import print_table


def _short(name: str) -> str:
    return name.removeprefix("digits/")


def render_matrix(names: list[str], M: np.ndarray, console: Console, title: str = "SAT (higher = more similar)") -> None:
    finite = M[np.isfinite(M)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    t = Table(title=title, show_lines=False, pad_edge=False)
    t.add_column("", style="bold")
    for n in names:
        t.add_column(_short(n), justify="right")
    for i, n in enumerate(names):
        cells = []
        for j in range(len(names)):
            v = M[i, j]
            if math.isnan(v):
                cells.append("[dim]-[/dim]")
                continue
            x = 0.0 if hi == lo else (v - lo) / (hi - lo)
            # blue (dissimilar) -> red (similar)
            r, b = int(60 + 195 * x), int(255 - 195 * x)
            cells.append(f"[rgb({r},80,{b})]{v:.2f}[/]")
        t.add_row(_short(n), *cells)
    print_table(t, console)
