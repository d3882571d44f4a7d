"""Shared CLI pieces: stderr console, progress bars, option parsing, error handling."""

from __future__ import annotations

import contextlib
import sys
from fractions import Fraction
from typing import Iterator, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from satkit.errors import ParameterError, SatkitError

err_console = Console(stderr=True, highlight=False)


class State:
    quiet: bool = False


STATE = State()


class SatkitGroup(TyperGroup):
    """Turn SatkitError (bad input) into one line on stderr and exit code 2; never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SatkitError as e:
            from satkit.provenance import printable

            # messages quote names read from files: never let their control characters reach the terminal
            msg = printable(" ".join(str(e).split()))
            click.echo(f"satkit: error: {msg}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("satkit: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # the reader went away (`satkit ... | head`): stop quietly like coreutils;
            # handled here because click's own handler would exit 1
            stdout_to_devnull()
            ctx.exit(EXIT_BROKEN_PIPE)


EXIT_BROKEN_PIPE = 128 + 13  # killed by SIGPIPE, what a shell reports for coreutils in the same spot


def stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null, so flushing what is still buffered
    (at exit) cannot raise BrokenPipeError again and print "Exception ignored"."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(fd, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor (tests capture stdout in memory)
        pass
    finally:
        os.close(fd)


def show_progress() -> bool:
    return not STATE.quiet and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress display on stderr, hidden with --quiet or when stderr is not a terminal."""
    p = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show_progress(),
        transient=False,
    )
    with p:
        yield p


def task_callback(p: Progress, description: str):
    """A ``progress(done, total)`` callback for the library that drives one rich task."""
    task = p.add_task(description, total=None)

    def cb(done: int, total: int) -> None:
        p.update(task, completed=done, total=total)

    return cb


def info(msg: str) -> None:
    if not STATE.quiet:
        err_console.print(msg)


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}")


def parse_fraction(value: str, what: str) -> float:
    """Accept 0.0314 or 8/255."""
    try:
        return float(Fraction(value.strip())) if "/" in value else float(value)
    except (ValueError, ZeroDivisionError):
        raise ParameterError(f"{what} must be a number or a fraction like 8/255, got '{value}'") from None


def parse_floats(value: Optional[str], what: str) -> Optional[tuple[float, ...]]:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ParameterError(f"{what} must be comma-separated numbers, got '{value}'") from None


def parse_input_size(value: Optional[str]) -> Optional[tuple[int, int, int]]:
    if value is None:
        return None
    try:
        parts = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0:
        raise ParameterError(f"--input-size must be C,H,W (e.g. 3,224,224), got '{value}'")
    return parts  # type: ignore[return-value]


# ---- options shared by several commands (typer needs them as defaults) ----

DeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, mps or auto (first GPU if any, else CPU).")
AmpOpt = typer.Option("off", "--amp", help="Autocast: bf16, fp16 (GPU) or off.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr.")
ArchOpt = typer.Option(None, "--arch", help="Architecture for a weights-only file: a timm name or digits/<arch>.")
PickleOpt = typer.Option(False, "--allow-pickle", help="Allow loading a pickled full model. Unpickling runs code from the file: only for files you trust.")
PretrainedOpt = typer.Option(True, "--pretrained/--random-init", help="timm names: load pretrained weights (default) or use random init (benchmarks, tests).")
MeanOpt = typer.Option(None, "--mean", help="Override normalization mean, e.g. 0.485,0.456,0.406.")
StdOpt = typer.Option(None, "--std", help="Override normalization std, e.g. 0.229,0.224,0.225.")
InputSizeOpt = typer.Option(None, "--input-size", help="Override the model's input size C,H,W (e.g. 3,224,224).")
DataOpt = typer.Option("digits", "--data", help="digits | digits:train | an image folder (one sub-folder per class) | a .safetensors data file.")
NOpt = typer.Option(None, "--n", help="Draw a class-stratified, seeded sample of N images (paper: 5000 = 5 per ImageNet class). Default: all.")
DataSeedOpt = typer.Option(0, "--data-seed", help="Seed of the --n sample.")
CanvasOpt = typer.Option(None, "--canvas", help="Canvas size in px every model sees (default: 16 for digits, 224 for folders).")


def model_options(arch, allow_pickle, pretrained, mean=None, std=None, input_size=None, name=None):
    from satkit.models import ModelOptions

    return ModelOptions(
        arch=arch, allow_pickle=allow_pickle, pretrained=pretrained,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
        input_size=parse_input_size(input_size), name=name,
    )


def set_quiet(quiet: bool) -> None:
    if quiet:
        STATE.quiet = True


def fail(msg: str) -> None:
    """Raise a usage-style SatkitError from the CLI layer."""
    raise ParameterError(msg)


BatchSizeHelp = "Images per batch, or 'auto': the largest power of two that fits in GPU memory (CUDA), or the smallest that runs near full speed (CPU; probed with a few timed steps)."
CompileOpt = typer.Option(False, "--compile", help="torch.compile the model first (pays off on GPUs for long runs; compiling takes tens of seconds).")


def parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``--shard i/n`` -> (i, n), 0-based."""
    if value is None:
        return None
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        fail(f"--shard must look like i/n (e.g. 0/4), got '{value}'")
    if n <= 0 or not 0 <= i < n:
        fail(f"--shard {value}: need 0 <= i < n (shards are numbered from 0, e.g. 0/4 .. 3/4)")
    return i, n


DEFAULT_BATCH = "128"  # satkit.jobs.DEFAULT_BATCH_SIZE, as typer wants a literal default


def rerun_line() -> str | None:
    """The command line being run, shell-quoted, for the file's provenance (when run as `satkit`)."""
    from satkit.provenance import shell_quote

    return shell_quote(["satkit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("satkit") else None


def batch_size_value(value: str):
    from satkit.models.batching import parse_batch_size

    return parse_batch_size(value)
