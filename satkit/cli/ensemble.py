"""satkit ensemble: ensembles of logits files vs SAT (paper 5.1, Fig. 6, Fig. 7, Table 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from satkit.cli import common as c


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def ensemble(
    logits: List[str] = typer.Argument(..., metavar="LOGITS...", help="Logits files written by satkit logits (one per model, same clean set)."),
    sat: Optional[str] = typer.Option(
        None, "--sat",
        help="SAT matrix CSV (satkit matrix / study's sat.csv) holding every model: adds SAT per ensemble, the SAT-ERR correlation and --select.",
    ),
    output: str = typer.Option(
        "-", "--output", "-o",
        help="Per-ensemble table (size, models, ensemble_error, mean/best member error, err, sat, sampled); - for stdout.",
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot",
        help="SAT vs ERR scatter of all pairs with the least-squares line (paper Fig. 6); .png, .svg or .pdf. Needs --sat.",
    ),
    select: Optional[int] = typer.Option(
        None, "--select",
        help="Pick the M most diverse models by SAT (greedy, see below) and compare with random M-subsets. Needs --sat.",
    ),
    clusters: Optional[str] = typer.Option(None, "--clusters", help="Clusters CSV of satkit cluster (model, cluster): enables the cluster grid (Table 3)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="Cluster --sat into K clusters (spectral, as satkit cluster) for the cluster grid."),
    grid: Optional[Path] = typer.Option(
        None, "--grid",
        help="Write the cluster grid (m, k, selection, mean_err, mean_ensemble_error, n_draws, n_distinct) as CSV.",
    ),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write member errors, correlations, the grid and the selection as JSON."),
    max_subsets: int = typer.Option(
        2000, "--max-subsets",
        help="Per ensemble size 3..5: evaluate all subsets when there are at most this many, else a seeded sample of this many.",
    ),
    draws: int = typer.Option(200, "--draws", help="Seeded draws per (M, K) cell of the cluster grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of subset sampling, the grid draws and k-means."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Ensemble models by averaging logits; relate the error reduction to SAT.

    Ensemble = argmax of the unweighted mean of the members' logits. For every
    pair, and for sizes 3..5 (all subsets, or a seeded sample of --max-subsets):
    ensemble top-1 error, member errors and the Error Reduction Rate

        ERR(S) = 100 * (1 - Err(ensemble of S) / mean over m in S of Err(m))   [%]

    plus SAT of the pair (mean pairwise SAT of a larger set). With --sat:
    Pearson and Spearman correlation (p-values) of SAT vs ERR over all pairs.
    With --clusters or --sat -k K: mean ERR of M-model ensembles drawn from K
    clusters (M = 2..5, K = 1..M) next to random M-subsets ("rand").
    --select M: greedy diverse set -- the lowest-SAT pair, then repeatedly the
    model with the lowest total SAT to those chosen -- vs random M-subsets.
    Logits files must come from the same clean set; model names must be in the
    SAT matrix.

    Example:

        satkit ensemble logits/*.safetensors --sat sat.csv -o ensembles.csv --plot sat_vs_err.png

        satkit ensemble logits/*.safetensors --sat sat.csv -k 6 --select 3 --grid grid.csv
    """
    from satkit.analysis.ensemble import analyze_ensembles, grid_wide, plot_sat_vs_err, read_clusters_table
    from satkit.cli.cluster import check_plot_path
    from satkit.io.atomic import atomic_output, check_outputs
    from satkit.io.tables import write_table
    from satkit.logits import open_logits_files
    from satkit.matrix.square import read_similarity_matrix

    c.set_quiet(quiet)
    check_outputs({"-o": output, "--plot": plot, "--grid": grid, "--summary": summary}, [*logits, sat, clusters])
    check_plot_path(plot, "--plot")
    if max_subsets <= 0:
        c.fail(f"--max-subsets must be positive, got {max_subsets}")
    if draws <= 0:
        c.fail(f"--draws must be positive, got {draws}")
    if clusters is not None and k is not None:
        c.fail("give either --clusters or -k, not both")
    if k is not None and sat is None:
        c.fail("-k clusters the SAT matrix: give --sat too (or a clusters CSV with --clusters)")
    if k is not None and k < 1:
        c.fail(f"-k must be at least 1, got {k}")
    if (plot is not None or select is not None) and sat is None:
        c.fail(f"{'--plot' if plot is not None else '--select'} needs a SAT matrix: give --sat")
    if grid is not None and clusters is None and k is None:
        c.fail("--grid needs a clustering: give --clusters FILE or --sat with -k K")
    if [sat, clusters].count("-") + logits.count("-") > 1:
        c.fail("stdin (-) can be given only once")

    files = open_logits_files(logits)
    sat_m = read_similarity_matrix(sat) if sat is not None else None
    cl = read_clusters_table(clusters) if clusters is not None else None
    with c.progress_bar() as p:
        report = analyze_ensembles(
            files, sat=sat_m, clusters=cl, k=k, cluster_sat=k is not None, max_subsets=max_subsets,
            draws=draws, seed=seed, select=select, progress=c.task_callback(p, "ensembles"),
        )
    for w in report.warnings:
        c.warn(w)
    write_table(report.subsets, output)
    if grid is not None and report.grid is not None:
        write_table(report.grid, grid)
    if summary is not None:
        with atomic_output(summary) as tmp:
            tmp.write_text(json.dumps(report.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if plot is not None:
        plot_sat_vs_err(report, plot)
    if c.STATE.quiet:
        return
    _print_report(report, grid_wide, n_samples=len(files[0].labels) if files else 0)


def _print_report(report, grid_wide, n_samples: int = 0) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="top-1 error of each model (%)", title_justify="left", pad_edge=False)
    t.add_column("model")
    t.add_column("error", justify="right")
    t.add_column("wrong images", justify="right")
    wrong = {}
    for name, e in report.member_errors.items():
        wrong[name] = round(e * n_samples / 100) if n_samples and e == e else None
        t.add_row(escape(name), _fmt(e), "" if wrong[name] is None else f"{wrong[name]} of {n_samples}")
    c.print_table(t)
    counts = [w for w in wrong.values() if w is not None]
    if counts and min(counts) < 30:
        c.info(f"ERR rests on {min(counts)}-{max(counts)} wrong images per model: one image moves a pair's ERR by "
               "several points; read the ERR numbers below as coarse")
    sizes = report.subsets.group_by("size").agg(_agg_exprs()).sort("size")
    t = Table(title="ensembles by size (means)", title_justify="left", pad_edge=False)
    for col in ("size", "n", "ensemble error %", "ERR %"):
        t.add_column(col, justify="right")
    for r in sizes.iter_rows(named=True):
        note = " (sampled)" if r["size"] in report.sampled_sizes else ""
        t.add_row(str(r["size"]), f"{r['n']}{note}", _fmt(r["ens"]), _fmt(r["err"]))
    c.print_table(t)
    if report.correlation is not None:
        co = report.correlation
        c.info(
            f"SAT vs ERR over {co['n']} pairs: Pearson r = {_fmt(co['pearson_r'], '.3f')} (p = {_fmt(co['pearson_p'], '.2g')}), "
            f"Spearman = {_fmt(co['spearman_r'], '.3f')} (p = {_fmt(co['spearman_p'], '.2g')})"
        )
    if report.grid is not None and report.grid.height:
        wide = grid_wide(report.grid)
        t = Table(title="mean ERR % of M-model ensembles drawn from K clusters (Table 3)", title_justify="left", pad_edge=False)
        for col in wide.columns:
            t.add_column(col, justify="right")
        for r in wide.iter_rows():
            t.add_row(str(r[0]), *(_fmt(v) for v in r[1:]))
        c.print_table(t)
    if report.selection is not None:
        s = report.selection
        c.info(
            f"--select {s['m']}: {escape(s['models'])} (mean SAT {_fmt(s['sat'])}): ensemble error {_fmt(s['ensemble_error'])} %, "
            f"ERR {_fmt(s['err'])} % vs random {s['m']}-subsets' mean ERR {_fmt(s['random_mean_err'])} % "
            f"(n = {s['random_n']}; beats or ties {_fmt(s['percentile'], '.0f')} % of them)"
        )


def _agg_exprs():
    import polars as pl

    return [pl.len().alias("n"), pl.col("ensemble_error").mean().alias("ens"), pl.col("err").mean().alias("err")]
