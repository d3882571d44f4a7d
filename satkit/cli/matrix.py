"""satkit matrix: transfer tables -> the SAT matrix."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from satkit.cli import common as c


def matrix(
    tables: List[str] = typer.Argument(..., help="Transfer tables written by satkit transfer (CSV/Parquet); - for stdin."),
    output: str = typer.Option("-", "--output", "-o", help="SAT matrix CSV (square: first column = row names, header = the same names); - for stdout."),
    long: Optional[Path] = typer.Option(None, "--long", help="Also write the long table: one row per pair with |X_AB|, both fool rates and SAT."),
    eps_s: float = typer.Option(1.0, "--eps-s", help="Floor inside the log, in percent: SAT = ln(max(eps_s, 100*rate)). Default 1 keeps SAT in [0, ln 100]."),
    show: bool = typer.Option(True, "--show/--no-show", help="Print the matrix as a coloured table on stderr."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Build the SAT matrix from transfer tables, exactly the paper's formula.

    SAT(A,B) = ln(max(eps_s, 100/(2|X_AB|) * sum over X_AB of [A(x_B) != y] + [B(x_A) != y])).
    A pair with empty X_AB or a missing direction gets an empty cell and a warning.

    Example:

        satkit matrix transfer/*.csv -o sat.csv --long sat_long.csv
    """
    from satkit.analysis.sat import build_matrix
    from satkit.cli.render import render_matrix
    from satkit.io.atomic import check_output_path
    from satkit.io.tables import read_table, write_table

    c.set_quiet(quiet)
    if output != "-":
        check_output_path(output)
    if long is not None:
        check_output_path(long)
    if tables.count("-") > 1:
        c.fail("stdin (-) can be given only once")
    dfs = [read_table(t, "transfer table") for t in tables]
    m = build_matrix(dfs, eps_s=eps_s)
    for w in m.warnings:
        c.warn(w)
    write_table(m.frame(), output)
    if long is not None:
        write_table(m.long, long)
    if show and not c.STATE.quiet and output != "-":
        render_matrix(m.names, m.values, c.err_console)
