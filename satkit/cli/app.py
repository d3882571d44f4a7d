"""The ``satkit`` command line."""

from __future__ import annotations

import gc
import sys
import warnings
from typing import Optional

import typer

from satkit import __version__
from satkit.cli import common as c
from satkit.cli.approx import approx
from satkit.cli.attack import attack
from satkit.cli.cards import cards_app
from satkit.cli.cluster import cluster
from satkit.cli.compare import compare
from satkit.cli.distill import distill
from satkit.cli.ensemble import ensemble
from satkit.cli.importance import importance
from satkit.cli.info import info
from satkit.cli.logits import logits
from satkit.cli.matrix import matrix
from satkit.cli.merge import merge
from satkit.cli.report import report
from satkit.cli.study import study
from satkit.cli.transfer import transfer
from satkit.cli.zoo import zoo_app

app = typer.Typer(
    cls=c.SatkitGroup,
    name="satkit",
    help="SAT -- Similarity by Attack Transferability: how similar are two image classifiers, measured by how well "
    "adversarial examples made on one fool the other. Start with `satkit study`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"satkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr (all commands)."),
) -> None:
    c.STATE.quiet = quiet
    # The image decoder refuses images over PIL's pixel limit with one line of its own; PIL's
    # warning for them (printed before that error) would be a second line on stderr.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels, could be decompression bomb")


app.command()(study)
app.command()(attack)
app.command()(transfer)
app.command()(merge)
app.command()(matrix)
app.command()(info)
app.add_typer(zoo_app, name="zoo")
app.command()(cluster)
app.command()(compare)
app.command()(importance)
app.add_typer(cards_app, name="cards")
app.command()(logits)
app.command()(ensemble)
app.command()(distill)
app.command()(approx)
app.command()(report)


def _exit_on_sigterm() -> None:
    """SIGTERM ends a command the way an error does: cleanup runs, then exit status 143 (128 + 15).

    Without this Python dies on SIGTERM without running ``atexit`` handlers or
    ``finally`` blocks, which leaves a ``transfer -`` stdin spool in $TMPDIR (gigabytes
    at attack-file sizes) and ``.partial`` temporaries behind. Installed by the
    console entry point only: the library and in-process callers of ``app`` keep
    their own signal handling. A handler already installed is chained to (it decides
    what happens); an ignored SIGTERM stays ignored.
    """
    import signal

    prev = signal.getsignal(signal.SIGTERM)
    if prev == signal.SIG_IGN:
        return

    def on_sigterm(signum, frame):
        if callable(prev):  # its decision; if it ends the process by raising, atexit removes the spool
            prev(signum, frame)
            return
        # removed here too, not only by atexit: a thread still running at exit would delay atexit
        tf = sys.modules.get("satkit.io.tensorfile")  # loaded only when a command read tensor files
        if tf is not None:
            tf.remove_stdin_spool()
        raise SystemExit(128 + signum)  # unwinds: `finally` blocks and atexit handlers run

    signal.signal(signal.SIGTERM, on_sigterm)


def main() -> None:
    _exit_on_sigterm()
    try:
        try:
            app()
        finally:
            # The process ends right after this. Freezing moves every live object out of the
            # garbage collector's reach, so interpreter shutdown skips its full collections over
            # the ~10^6 objects torch and timm create (about 1 s per command, measured). Nothing
            # outlives the process, so nothing is leaked; library and in-process (test) callers
            # of `app` are unaffected.
            gc.freeze()
            # Flush here, not at interpreter shutdown: a reader that went away is then a
            # BrokenPipeError we can handle instead of an "Exception ignored" on stderr.
            sys.stdout.flush()
    except BrokenPipeError:
        c.stdout_to_devnull()
        sys.exit(c.EXIT_BROKEN_PIPE)
