"""``report.html``: a study in one self-contained page, readable offline and printable.

Two steps: :func:`satkit.study.report_view.load_view` reads the study directory once into
a :class:`~satkit.study.report_view.ReportView` (plain data: what the page shows), and the
Jinja2 template ``templates/report.html.j2`` (package data) lays it out.

The page holds everything inline: CSS, the heatmap as inline SVG (every cell with
an SVG ``<title>``: the pair, SAT, percent transfer, |X_AB| and the interval when
computed, shown on hover without any script), the study's other figures as PNG
data URIs. It has no script and makes no request.

A study directory is untrusted input (it may come from someone else). Escaping is
the template's default, not a habit of each writer: autoescaping is on for every
template, so every string of the view (model names, paths, card keywords, data
sources, notes) is escaped where it lands; the one piece of markup the view carries
is the heatmap SVG, drawn by matplotlib from numbers (see :mod:`.report_view` for
what else is checked when the directory is read).

Sections (their ids are stable, for links and tests): ``settings``, ``heatmap``,
``models``, ``clusters``, ``importance``, ``ensembles``, ``approx``, ``intervals``,
``files``. A section whose analysis is absent says so.

Approximate placements (``satkit approx NEW --study DIR``) appear when their JSON
summaries are saved in the study directory as ``approx*.json``, e.g.
``--summary DIR/approx-mymodel.json``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jinja2

from satkit.io.atomic import atomic_output
from satkit.study.report_view import FIGURES, SECTIONS, TABLES, ReportView, load_view

__all__ = ["SECTIONS", "build_report", "render", "report_inputs", "write_report"]


def report_inputs(study_dir: str | os.PathLike) -> list[Path]:
    """The files a report of ``study_dir`` reads (present or not): an output must be none of them."""
    root = Path(study_dir)
    names = ["study.json", "sat.csv", *TABLES, *(f for figs in FIGURES.values() for f in figs)]
    return [root / n for n in names] + sorted(root.glob("approx*.json")) + sorted((root / "attacks").glob("*.safetensors"))


def write_report(study_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write :func:`build_report` of ``study_dir`` to ``output`` atomically; returns the path."""
    text = build_report(study_dir, output)
    with atomic_output(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(output)


def build_report(study_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """The report of a finished study directory as one HTML document.

    ``output`` is where the page will be written (None: stdout): its previous version,
    like any ``report.html`` in the study, is left out of the file table, so a rerun
    writes the same bytes.
    """
    return render(load_view(study_dir, output))


def render(view: ReportView) -> str:
    """The page of ``view``: the template, every string in it escaped."""
    return _template().render(v=view, titles=SECTIONS)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("satkit.study", "templates"),
        autoescape=True,  # every template, whatever its name: escaping is not opt-in
        undefined=jinja2.StrictUndefined,  # a name the view lacks is an error, never an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")
