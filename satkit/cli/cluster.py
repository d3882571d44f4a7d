"""satkit cluster: spectral clustering of a SAT matrix, with TF-IDF keywords from model cards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from satkit import settings as S
from satkit.cli import common as c

N_EIGEN_SHOWN = 10  # eigenvalues / gaps listed in the eigengap table
N_KEYWORDS = 5  # TF-IDF keywords per cluster (paper Table 1)


def check_plot_path(path: Optional[Path], option: str) -> None:
    """Fail early on a plot path with an unknown suffix or an unwritable directory."""
    from satkit.analysis.plots import SUFFIX_FORMATS
    from satkit.io.atomic import check_output_path

    if path is None:
        return
    if Path(path).suffix.lower() not in SUFFIX_FORMATS:
        c.fail(f"{option} {path}: unknown plot format; use a .png, .svg or .pdf file name")
    check_output_path(path)


def check_stdin_once(*paths: Optional[object]) -> None:
    if sum(1 for p in paths if p is not None and str(p) == "-") > 1:
        c.fail("stdin (-) can be given only once: read either the SAT matrix or the cards from stdin")


def warn_missing_cards(missing: list[str], what: str) -> None:
    """Name the models without a card (never silently dropped)."""
    from rich.markup import escape

    if not missing:
        return
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    c.warn(escape(
        f"{len(missing)} model(s) without a card: {shown}; {what}. "
        "Add their cards with --cards FILE (template: satkit cards export)."
    ))


def _eigengap_table(result) -> "object":
    from rich.table import Table

    n = len(result.eigenvalues)
    upper = min(n - 1, max(2, n // 2))  # the range choose_k searches (default max_k)
    t = Table(title=f"eigengap: k = {result.k}", title_justify="left", pad_edge=False,
              caption=f"k = argmax of the gap over k = 2..{upper} (k = 1 always has a large gap)", caption_justify="left")
    t.add_column("k", justify="right")
    t.add_column("eigenvalue λ_k", justify="right")
    t.add_column("gap λ_k − λ_k+1", justify="right")
    t.add_column("")
    for i in range(min(N_EIGEN_SHOWN, n)):
        k = i + 1
        gap = f"{result.gaps[i]:.4f}" if i < len(result.gaps) else ""
        eligible = 2 <= k <= upper
        note = "[bold green]← chosen[/bold green]" if k == result.k else ("" if eligible else "[dim]not considered[/dim]")
        style = None if eligible else "dim"
        t.add_row(str(k), f"{result.eigenvalues[i]:.4f}", gap, note, style=style)
    return t


def cluster_table(result, keywords) -> "object":
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{result.k} clusters", title_justify="left", show_lines=True, pad_edge=False)
    t.add_column("cluster", justify="right")
    t.add_column("n", justify="right")
    t.add_column("members")
    t.add_column(f"top-{N_KEYWORDS} TF-IDF keywords")
    for cluster, members in result.members().items():
        kw = keywords.filter(keywords["cluster"] == cluster).sort("rank")["keyword"].to_list()
        kw_cell = "\n".join(escape(k) for k in kw) if kw else "[dim]no member has a card[/dim]"
        t.add_row(str(cluster), str(len(members)), escape(", ".join(members)), kw_cell)
    return t


def cluster(
    sat_csv: str = typer.Argument(..., metavar="SAT_CSV", help="Square SAT matrix CSV (as written by satkit matrix); - for stdin."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="Number of clusters. Default: chosen by the largest eigengap among 2..n/2."),
    cards: Optional[str] = typer.Option(None, "--cards", help="Extra model cards CSV ('Model name' + 13 components); adds to / overrides the built-in cards."),
    output: str = typer.Option("-", "--output", "-o", help="Clusters CSV: model, cluster, method, spec_1..spec_k (spectral features); - for stdout."),
    keywords: Optional[Path] = typer.Option(
        None, "--keywords",
        help="Also write the top-5 TF-IDF keywords per cluster as CSV (cluster, rank, keyword, score, n_models).",
    ),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Heatmap of spectral-feature distances sorted by cluster (paper Fig. 4); .png, .svg or .pdf."),
    tsne: Optional[Path] = typer.Option(None, "--tsne", help="t-SNE map of the models coloured by cluster (paper Fig. 1); .png, .svg or .pdf."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means (100 restarts) and t-SNE."),
    method: str = typer.Option(
        S.CLUSTER_METHOD, "--method",
        help="paper: k-means on the top-k eigenvectors as the paper describes them; njw: rows normalized to unit length first (Ng-Jordan-Weiss). Recorded in "
        "the output's method column.",
    ),
    quiet: bool = c.QuietOpt,
) -> None:
    """Group models by SAT with spectral clustering (paper 4.1, appendix D.3).

    The affinity is the SAT matrix with the diagonal set to 0, negative values
    clipped to 0 and an asymmetric matrix averaged with its transpose; then
    the normalized affinity's top-k eigenvectors and k-means with 100 restarts
    (--method njw normalizes rows first; the method docs are in
    satkit.analysis.cluster). Clusters are numbered in the order of the models
    sorted by name, so file order does not matter.

    The cluster table on stderr lists each cluster's members and its top-5
    TF-IDF keywords from the model cards (built in: the paper's 69 models and
    the digits zoo). Models without a card are named in a warning and still
    clustered.

    Example:

        satkit cluster sat.csv -o clusters.csv --plot clusters.png --tsne tsne.png

        satkit cluster sat.csv -k 5 --cards my_cards.csv --keywords keywords.csv

        satkit cluster sat.csv -k 3 --method njw

        satkit matrix transfer/*.csv | satkit cluster - -q
    """
    from satkit.analysis.cluster import plot_spectral_distances, plot_tsne, spectral_cluster, tfidf_keywords
    from satkit.cards import load_cards
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import write_table
    from satkit.matrix.square import read_similarity_matrix

    c.set_quiet(quiet)
    # every output path is checked before any work: bad paths fail early, nothing is half-written
    check_outputs({"-o": output, "--keywords": keywords, "--plot": plot, "--tsne": tsne}, [sat_csv, cards])
    check_stdin_once(sat_csv, cards)
    check_plot_path(plot, "--plot")
    check_plot_path(tsne, "--tsne")

    card_table = load_cards(cards)
    names, S = read_similarity_matrix(sat_csv)
    result = spectral_cluster(names, S, k, seed=seed, method=method)
    kw, missing = tfidf_keywords(result.labels, result.names, card_table, top=N_KEYWORDS)

    frame = result.to_frame()

    if result.symmetrized:
        c.info("the SAT matrix is asymmetric: clustering uses (S + S^T) / 2")
    if result.n_negative_clipped:
        c.info(f"{result.n_negative_clipped} negative off-diagonal affinity value(s) clipped to 0 (no edge)")
    warn_missing_cards(missing, "they are clustered but give no keywords")
    if not c.STATE.quiet:
        if result.k_from_eigengap:
            c.print_table(_eigengap_table(result))
        c.print_table(cluster_table(result, kw))

    write_table(frame, output)
    if keywords is not None:
        write_table(kw, keywords)
    if plot is not None:
        plot_spectral_distances(result, plot)
        c.info(f"distance heatmap -> {plot}")
    if tsne is not None:
        plot_tsne(result, tsne, seed=seed)
        c.info(f"t-SNE map -> {tsne}")
