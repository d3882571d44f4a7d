"""satkit zoo list|train: the built-in digits model zoo."""

from __future__ import annotations

from typing import List, Optional

import typer

from satkit.cli import common as c

zoo_app = typer.Typer(cls=c.SatkitGroup, no_args_is_help=True, help="The built-in digits zoo: small timm models trained on scikit-learn's digits.")


@zoo_app.command("list")
def zoo_list() -> None:
    """List zoo models, their architecture, input size and where their weights are.

    Example:

        satkit zoo list
    """
    from rich.table import Table

    from satkit.models import zoo

    t = Table(title="digits zoo")
    for col in ("model", "arch", "input", "base architecture", "weights"):
        t.add_column(col)
    for name, m in zoo.ZOO_MODELS.items():
        arch = zoo.ZOO_ARCHS[m.arch]
        w = zoo.find_weights(name)
        t.add_row(f"digits/{name}", m.arch, "x".join(map(str, arch.data_config.input_size)),
                  arch.card.get("Base architecture", ""), str(w) if w else "[red]not trained[/red]")
    typer.echo(_plain_list())  # data (names) on stdout, the table on stderr
    if not c.STATE.quiet:
        c.print_table(t)


def _plain_list() -> str:
    from satkit.models import zoo

    return "\n".join(f"digits/{n}" for n in zoo.ZOO_MODELS)


@zoo_app.command("train")
def zoo_train(
    names: Optional[List[str]] = typer.Argument(None, help="Zoo models to train (default: all)."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Train zoo models on the digits train split and cache their weights ($SATKIT_HOME/zoo, else ~/.cache/satkit/zoo).

    Training is seeded and deterministic on CPU; the whole zoo takes a few minutes on 2 cores.

    Example:

        satkit zoo train                 # all models

        satkit zoo train resnet-s1 vit-s1
    """
    from satkit.errors import ModelError, OutputError
    from satkit.io.atomic import check_outputs
    from satkit.models import zoo

    c.set_quiet(quiet)
    names = [n.removeprefix("digits/") for n in (names or list(zoo.ZOO_MODELS))]
    unknown = [n for n in names if n not in zoo.ZOO_MODELS]
    if unknown:
        raise ModelError(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(zoo.ZOO_MODELS)}")
    # the weights are written after minutes of training: check where they go first
    home = zoo.zoo_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the zoo directory {home} ({e.strerror}); set SATKIT_HOME to a writable directory") from None
    check_outputs({f"digits/{n}": home / f"{n}{zoo.WEIGHTS_SUFFIX}" for n in names})
    with c.progress_bar() as p:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = p.add_task(f"train {name}", total=total)
            p.update(tasks[name], completed=done, total=total)

        rows = zoo.train_zoo(names, progress=cb)
    for r in rows:
        c.info(f"digits/{r['name']}: test accuracy {r['test_accuracy']:.1%}, {r['train_seconds']:.1f} s -> {r['path']}")
