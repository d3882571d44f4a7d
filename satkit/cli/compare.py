"""satkit compare: agreement of two SAT matrices over the same models (Pearson, Spearman, Mantel, ARI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from satkit import settings as S
from satkit.cli import common as c


def compare(
    first: str = typer.Argument(..., metavar="A_CSV", help="A square SAT matrix CSV (satkit matrix, a study's sat.csv)."),
    second: str = typer.Argument(..., metavar="B_CSV", help="Another one over the same models (any order)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="Clusters for the ARI. Default: the first matrix's eigengap choice, used for both."),
    method: str = typer.Option(S.CLUSTER_METHOD, "--method", help="Spectral clustering method for the ARI: paper or njw (see satkit cluster)."),
    permutations: int = typer.Option(9999, "--permutations", help=f"Permutations of the Mantel test. Range: {c.L.PERMUTATIONS.text}."),
    seed: int = typer.Option(0, "--seed", help="Seed of the permutations and of k-means."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Scatter plot of the pairs, A against B; .png, .svg or .pdf."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (keys: pearson, spearman, mantel_p, n_pairs, ari, ...)."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Do two SAT matrices tell the same story? Correlation over model pairs, Mantel test, cluster agreement.

    Over the models both matrices hold (matched by name; disjoint sets are refused):
    Pearson and Spearman over the off-diagonal pairs, a one-sided Mantel
    permutation p-value (the pairs share models, so the usual p-values are
    optimistic), and the adjusted Rand index between the two spectral clusterings.
    Use it to check SAT under another attack, sample, eps or seed. The method is
    in satkit.analysis.compare's docstring.

    Example:

        satkit compare study-pgd/sat.csv study-apgd/sat.csv --plot pgd_vs_apgd.png

        satkit compare a.csv b.csv -k 3 --json | jq .mantel_p
    """
    from satkit.analysis.compare import compare_matrices, plot_compare
    from satkit.analysis.plots import SUFFIX_FORMATS
    from satkit.io.atomic import check_outputs
    from satkit.matrix.square import read_similarity_matrix

    c.set_quiet(quiet)
    check_outputs({"--plot": plot}, [first, second])
    if plot is not None and plot.suffix.lower() not in SUFFIX_FORMATS:
        c.fail(f"--plot {plot}: unknown plot format; use a .png, .svg or .pdf file name")
    if first == "-" and second == "-":
        c.fail("only one of the two matrices can come from stdin")
    names_a, A = read_similarity_matrix(first)
    names_b, B = read_similarity_matrix(second)
    res = compare_matrices(names_a, A, names_b, B, k=k, permutations=permutations, seed=seed, method=method)
    if plot is not None:
        plot_compare(res, plot, labels=(Path(first).name, Path(second).name))
    for n in res.notes:
        c.warn(n)
    if res.only_in_a or res.only_in_b:
        c.warn(f"compared the {len(res.names)} models both hold; only in {first}: {', '.join(res.only_in_a) or '-'}; "
               f"only in {second}: {', '.join(res.only_in_b) or '-'}")
    if as_json:
        typer.echo(json.dumps(res.summary(), indent=2, sort_keys=True))
        return
    ari = f"ARI {res.ari:.3f} at k = {res.k} ({res.method})" if res.ari is not None else "no clustering comparison"
    typer.echo(f"{res.n_pairs} pairs of {len(res.names)} models: Pearson {res.pearson:.4f} (p = {res.pearson_p:.2g}), "
               f"Spearman {res.spearman:.4f} (p = {res.spearman_p:.2g}), Mantel p = {res.mantel_p:.2g} "
               f"({res.permutations} permutations); {ari}")
