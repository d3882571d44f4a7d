"""satkit cards list|show|export: the model cards (13 architecture components per model)."""

from __future__ import annotations

from typing import Optional

import typer

from satkit.cli import common as c

cards_app = typer.Typer(
    cls=c.SatkitGroup,
    no_args_is_help=True,
    help="Model cards: the 13 architecture components per model that cluster keywords and importance use "
    "(built in: the paper's 69 ImageNet models and the digits zoo).",
)

CardsOpt = typer.Option(None, "--cards", help="Extra model cards CSV ('Model name' + 13 components); adds to / overrides the built-in cards.")


@cards_app.command("list")
def cards_list(cards: Optional[str] = CardsOpt) -> None:
    """List the models that have a card: names on stdout, a table on stderr.

    Example:

        satkit cards list

        satkit cards list --cards my_cards.csv
    """
    from rich.markup import escape
    from rich.table import Table

    from satkit.cards import NAME, load_cards

    df = load_cards(cards)
    names = df[NAME].to_list()
    typer.echo("\n".join(names))  # data (names) on stdout, the table on stderr
    if not c.STATE.quiet:
        t = Table(title=f"{len(names)} model cards", title_justify="left", pad_edge=False)
        for col in (NAME, "Base architecture", "Stem layer"):
            t.add_column(col)
        for r in df.iter_rows(named=True):
            t.add_row(escape(r[NAME]), escape(r["Base architecture"]), escape(r["Stem layer"]))
        c.print_table(t)


@cards_app.command("show")
def cards_show(
    name: str = typer.Argument(..., help="Model name: a paper/timm name (tags like .a1_in1k and a timm: prefix are ignored) or digits/<model>."),
    cards: Optional[str] = CardsOpt,
) -> None:
    """Print the 13 components of one model's card as 'Component: value' lines (~ = not applicable).

    Example:

        satkit cards show resnet50

        satkit cards show digits/vit-s1
    """
    import difflib

    from satkit.cards import COMPONENTS, NAME, card_of, load_cards
    from satkit.errors import ParameterError

    df = load_cards(cards)
    card = card_of(name, df)
    if card is None:
        names = df[NAME].to_list()
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        if not close:  # also try a case-insensitive substring match (e.g. "vit")
            close = [n for n in names if name.lower() in n.lower()][:5]
        hint = f"did you mean {', '.join(close)}?" if close else "see satkit cards list"
        raise ParameterError(f"no card for model '{name}'; {hint} (add your own with --cards FILE)")
    typer.echo("\n".join(f"{comp}: {card[comp]}" for comp in COMPONENTS))


@cards_app.command("export")
def cards_export(
    output: str = typer.Option("-", "--output", "-o", help="Cards CSV to write; - for stdout."),
) -> None:
    """Write all built-in cards as CSV in the user-card format: a template for --cards.

    Columns: 'Model name' and the 13 components; '~' (or an empty cell) means
    not applicable. Edit or append rows and pass the file with --cards.

    Example:

        satkit cards export -o cards.csv
    """
    from satkit.cards import load_cards
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import write_table

    check_outputs({"-o": output})
    df = load_cards()
    write_table(df, output)
    if output != "-":
        c.info(f"{df.height} cards -> {output}")
