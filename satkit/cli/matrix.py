"""satkit matrix: transfer tables -> the SAT matrix."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from satkit import settings as S
from satkit.cli import common as c


def matrix(
    tables: List[str] = typer.Argument(..., help="Transfer tables written by satkit transfer (CSV/Parquet); - for stdin."),
    output: str = typer.Option("-", "--output", "-o", help="SAT matrix CSV (square: first column = row names, header = the same names); - for stdout."),
    long: Optional[Path] = typer.Option(None, "--long", help="Also write the long table: one row per pair with |X_AB|, both fool rates and SAT."),
    eps_s: float = typer.Option(
        S.EPS_S, "--eps-s",
        help="Floor inside the log, in percent (1e-20 <= eps_s < 100): SAT = ln(max(eps_s, 100*rate)). Default 1 keeps SAT in [0, ln 100].",
    ),
    same_class: Optional[Path] = typer.Option(
        None, "--same-class",
        help="Also write the same-class matrix (square CSV): per pair, the fraction of X_AB whose transferred adversarial the target puts in the source's own "
        "wrong class, averaged over both directions (the paper's appendix G.2). Needs tables from attack files that store source_adv_pred.",
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot",
        help="Also draw the heatmap: .png, .svg or .pdf (hierarchical order with its tree; satkit study orders by cluster).",
    ),
    show: bool = typer.Option(True, "--show/--no-show", help="Print the matrix as a coloured table on stderr."),
    per_sample: Optional[List[Path]] = typer.Option(None, "--per-sample", help="Per-sample outcome tables (satkit transfer --per-sample), for --ci."),
    ci: Optional[float] = typer.Option(
        None, "--ci",
        help="Add percentile-bootstrap confidence intervals at this level (e.g. 0.95) to the --long table; needs --per-sample.",
    ),
    n_boot: int = typer.Option(
        S.N_BOOT, "--n-boot",
        help=f"Bootstrap resamples for --ci; at least 2/(1-ci), so each tail of the interval holds one (40 for 0.95); at most {c.L.N_BOOT.high}.",
    ),
    quiet: bool = c.QuietOpt,
) -> None:
    """Build the SAT matrix from transfer tables, exactly the paper's formula.

    SAT(A,B) = ln(max(eps_s, 100/(2|X_AB|) * sum over X_AB of [A(x_B) != y] + [B(x_A) != y])).
    A pair with empty X_AB or a missing direction gets an empty cell and a warning.

    Example:

        satkit matrix transfer/*.csv -o sat.csv --long sat_long.csv

        satkit matrix transfer/*.csv -o sat.csv --plot sat.png                # and the heatmap

        satkit matrix t.csv --per-sample samples.parquet --ci 0.95 --long long.csv   # is my sample big enough?

        satkit matrix transfer/*.csv -o sat.csv --same-class same.csv     # same wrong class, per pair
    """
    from satkit.cli.render import render_matrix
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import read_table, write_table
    from satkit.matrix.sat import build_matrix

    c.set_quiet(quiet)
    from satkit.cli.cluster import check_plot_path

    check_outputs({"-o": output, "--long": long, "--same-class": same_class, "--plot": plot}, [*tables, *(per_sample or [])])
    check_plot_path(plot, "--plot")
    if tables.count("-") > 1:
        c.fail("stdin (-) can be given only once")
    if ci is not None and (not per_sample or long is None):
        c.fail("--ci needs --per-sample tables (satkit transfer --per-sample) and a --long output for the intervals")
    dfs = [read_table(t, "transfer table") for t in tables]
    m = build_matrix(dfs, eps_s=eps_s, where=["stdin" if t == "-" else t for t in tables])
    if ci is not None:
        from satkit.matrix.sat import bootstrap_ci

        samples = [read_table(p, "per-sample table") for p in per_sample]
        intervals = bootstrap_ci(samples, m.names, eps_s=eps_s, level=ci, n_boot=n_boot, where=[str(p) for p in per_sample], matrix=m)
        m.long = m.long.join(intervals, on=["a", "b"], how="left")
    if same_class is not None and m.same_class is None:
        c.fail("--same-class needs the n_same_class column, which these tables lack: remake the attack files "
               "and transfer tables with this satkit")
    for w in m.warnings:
        c.warn(w)
    write_table(m.frame(), output)
    if same_class is not None:
        write_table(m.frame(m.same_class), same_class)
    if long is not None:
        write_table(m.long, long)
    if plot is not None:
        from satkit.analysis.heatmap import plot_sat_heatmap

        plot_sat_heatmap(m.names, m.values, plot, eps_s=eps_s)
    if show and not c.STATE.quiet and output != "-":
        render_matrix(m.names, m.values, c.err_console)
