"""satkit zoo list|train: the built-in digits model zoo."""

from __future__ import annotations

from typing import List, Optional

import typer

from satkit.cli import common as c

zoo_app = typer.Typer(cls=c.SatkitGroup, no_args_is_help=True, help="The built-in digits zoo: small timm models trained on scikit-learn's digits.")

SetOpt = typer.Option(None, "--set", help="A named set of zoo models: default (the default) or strategies (resnet/vit seeds and training-strategy variants).")


@zoo_app.command("list")
def zoo_list(zoo_set: Optional[str] = SetOpt) -> None:
    """List zoo models, their architecture, input size and where their weights are.

    Example:

        satkit zoo list

        satkit zoo list --set strategies    # + how each model's training differs
    """
    from rich.table import Table

    from satkit.models import zoo

    names = zoo.zoo_set(zoo_set or zoo.DEFAULT_SET)
    models = [zoo.ZOO_MODELS[n] for n in names]
    variants = any(m.is_variant for m in models)  # the default set's table is unchanged
    t = Table(title="digits zoo" if zoo_set in (None, zoo.DEFAULT_SET) else f"digits zoo: {zoo_set}")
    for col in ("model", "arch", "input", "base architecture", *(("training",) if variants else ()), "weights"):
        t.add_column(col)
    for m in models:
        arch = zoo.ZOO_ARCHS[m.arch]
        w = zoo.find_weights(m.name)
        training = ((m.training or f"recipe of {m.arch}, seed {m.seed}"),) if variants else ()
        t.add_row(f"digits/{m.name}", m.arch, "x".join(map(str, arch.data_config.input_size)),
                  arch.card.get("Base architecture", ""), *training, str(w) if w else "[red]not trained[/red]")
    typer.echo("\n".join(f"digits/{n}" for n in names))  # data (names) on stdout, the table on stderr
    if not c.STATE.quiet:
        c.print_table(t)


@zoo_app.command("train")
def zoo_train(
    names: Optional[List[str]] = typer.Argument(None, help="Zoo models to train (default: the default set)."),
    zoo_set: Optional[str] = SetOpt,
    quiet: bool = c.QuietOpt,
) -> None:
    """Train zoo models on the digits train split and cache their weights ($SATKIT_HOME/zoo, else ~/.cache/satkit/zoo).

    Training is seeded and deterministic on CPU; the whole zoo takes a few minutes on 2 cores.

    Example:

        satkit zoo train                 # the default set

        satkit zoo train resnet-s1 vit-s1

        satkit zoo train --set strategies
    """
    from satkit.errors import ModelError, OutputError
    from satkit.io.atomic import check_outputs
    from satkit.models import zoo

    c.set_quiet(quiet)
    if names and zoo_set is not None:
        c.fail("--set picks the models: give either --set or model names, not both")
    names = [n.removeprefix("digits/") for n in (names or zoo.zoo_set(zoo_set or zoo.DEFAULT_SET))]
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
