"""satkit importance: which architecture component drives SAT (permutation importance)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from satkit.cli import common as c

LOW_R2 = 0.3  # below this held-out R^2 the importances explain little


def importance_table(result) -> "object":
    from rich.table import Table

    t = Table(title=f"permutation importance ({result.n_pairs} pairs of {result.n_models} models)",
              title_justify="left", pad_edge=False)
    t.add_column("rank", justify="right")
    t.add_column("component")
    t.add_column("importance", justify="right")
    t.add_column("± std", justify="right")
    t.add_column("")
    top = max(float(result.mean.max()), 1e-12)
    for i, (comp, m, s) in enumerate(zip(result.components, result.mean, result.std)):
        bar = "█" * int(round(20 * max(float(m), 0.0) / top))
        t.add_row(str(i + 1), comp, f"{m:.4f}", f"{s:.4f}", f"[blue]{bar}[/blue]")
    return t


def importance(
    sat_csv: str = typer.Argument(..., metavar="SAT_CSV", help="Square SAT matrix CSV (as written by satkit matrix); - for stdin."),
    cards: Optional[str] = typer.Option(None, "--cards", help="Extra model cards CSV ('Model name' + 13 components); adds to / overrides the built-in cards."),
    output: str = typer.Option("-", "--output", "-o", help="Importance CSV: rank, component, importance_mean, importance_std; - for stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Bar plot of the importances (paper Fig. 3); .png, .svg or .pdf."),
    seed: int = typer.Option(0, "--seed", help="Seed of the regressor, the permutations and the cross-validation folds."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Rank the 13 architecture components by how much they explain SAT (paper 4.1, appendix D.1, Fig. 3).

    For every pair of models with cards, the features are the 13 per-component
    differences (1 = the cards differ) and the target is the pair's SAT (mean of
    both directions). A gradient-boosting regressor with the paper's settings
    (500 stages, depth 12, min samples per leaf 4, learning rate 0.02) is fit on
    all pairs; importance = mean drop of R^2 when a component is shuffled
    (10 repeats). The held-out R^2 (5-fold cross-validation over pairs) says
    whether the components predict SAT at all: when it is low, read the
    importances with care.

    Example:

        satkit importance sat.csv -o importance.csv --plot importance.png

        satkit importance sat.csv --cards my_cards.csv
    """
    from satkit.analysis.importance import feature_importance, plot_importance
    from satkit.cards import load_cards
    from satkit.cli.cluster import check_plot_path, check_stdin_once, warn_missing_cards
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import write_table
    from satkit.matrix.square import read_similarity_matrix

    c.set_quiet(quiet)
    check_outputs({"-o": output, "--plot": plot}, [sat_csv, cards])
    check_stdin_once(sat_csv, cards)
    check_plot_path(plot, "--plot")

    card_table = load_cards(cards)
    names, S = read_similarity_matrix(sat_csv)
    status = c.err_console.status("fitting gradient boosting, permutations and 5-fold CV ...") if c.show_progress() else contextlib.nullcontext()
    with status:
        result = feature_importance(
            names, S, card_table, seed=seed,
            n_estimators=500, max_depth=12, min_samples_leaf=4, learning_rate=0.02, n_repeats=10,
        )

    warn_missing_cards(result.missing, "their pairs are left out of the regression")
    if not c.STATE.quiet:
        c.print_table(importance_table(result))
        c.info(
            f"held-out R^2 = {result.r2_cv:.3f} ± {result.r2_cv_std:.3f} ({result.cv_folds}-fold cross-validation over pairs); "
            f"in-sample R^2 = {result.r2_train:.3f}"
        )
        c.info(
            f"read as exploratory: {result.n_pairs} pairs of {len(names) - len(result.missing)} models; components "
            "that change together across these models cannot be told apart. An importance is the drop in R^2 when "
            "the component's column is shuffled; R^2 can fall below 0 (worse than predicting the mean SAT), so an "
            "importance above 1 means the fit without that component is worse than no fit at all"
        )
    if result.r2_cv < LOW_R2:
        c.warn(
            f"held-out R^2 is {result.r2_cv:.2f} (< {LOW_R2}): the components predict SAT poorly on unseen pairs, "
            "so these importances explain little; read them with care"
        )
    write_table(result.to_frame(), output)
    if plot is not None:
        plot_importance(result, plot)
        c.info(f"importance plot -> {plot}")
