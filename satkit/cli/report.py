"""satkit report: a finished study as one self-contained HTML page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from satkit.cli import common as c


def report(
    study_dir: Path = typer.Argument(..., help="Study directory written by satkit study (needs study.json and sat.csv)."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o",
        help="HTML file to write; - for stdout. Default: STUDY_DIR/report.html (what satkit study writes).",
    ),
    quiet: bool = c.QuietOpt,
) -> None:
    """Write a study's report: settings and provenance, how to rerun, the SAT heatmap (hover a cell for the pair,
    SAT, percent transfer and |X_AB|), per-model summary, clusters, importance, ensembles, approx placements,
    confidence intervals and the list of files.

    One file, no network: CSS inline, figures inline (SVG, PNG data URIs), no script; prints well.
    The study directory may come from anyone: everything read from it is escaped.

    Example:

        satkit report satkit-study -o report.html

        satkit report shared-study -o - > /tmp/study.html
    """
    from satkit.io.atomic import check_outputs
    from satkit.study.report import build_report, report_inputs, write_report

    c.set_quiet(quiet)
    out = output if output is not None else str(study_dir / "report.html")
    check_outputs({"-o": out}, report_inputs(study_dir))
    if out == "-":
        sys.stdout.write(build_report(study_dir, out))
        sys.stdout.flush()
        return
    path = write_report(study_dir, out)
    c.info(f"wrote {path}")
