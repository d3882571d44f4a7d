"""Shared CLI pieces: stderr console, progress bars, option parsing, error handling."""

from __future__ import annotations

import contextlib
import re
import sys
from fractions import Fraction
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from satkit import limits as L
from satkit import settings as S
from satkit.errors import ParameterError, SatkitError

err_console = Console(stderr=True, highlight=False)


class State:
    quiet: bool = False


STATE = State()


class SatkitGroup(TyperGroup):
    """Turn SatkitError (bad input) into one line on stderr and exit code 2; never a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except SatkitError as e:
            from satkit.provenance import printable

            # messages quote names read from files: never let their control characters reach the terminal
            msg = printable(" ".join(str(e).split()))
            if isinstance(e, ParameterError):  # the library names settings by field; here they are options
                msg = S.flag_message(msg)
            typer.echo(f"satkit: error: {msg}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            typer.echo("satkit: interrupted", err=True)
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


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (live progress bars, tables at the terminal's width)."""
    return _is_terminal(sys.stderr)


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed, or an object without a descriptor
        return False


def show_progress() -> bool:
    """Whether live (redrawn) progress displays are shown: not with --quiet, and only on a terminal."""
    return not STATE.quiet and stderr_is_terminal()


# Off a terminal (CI logs, `2> log`) progress is a plain line per step of this many percent,
# or after this many seconds without a line; a task's last line is printed when it completes.
PLAIN_STEP_PERCENT = 5
PLAIN_INTERVAL_S = 10.0
PLAIN_MIN_GAP_S = 1.0  # a task that finishes within this needs no line before its last one
PLAIN_WARMUP_S = 10.0  # a command shorter than this prints its progress lines at its normal end only


@contextlib.contextmanager
def progress_bar() -> Iterator[Progress | "PlainProgress"]:
    """Progress on stderr: rich bars on a terminal, plain lines elsewhere, nothing with --quiet.

    Both kinds take ``add_task(description, total=...)`` and ``update(task, completed=..., total=...,
    description=...)``; every command reports progress through here.
    """
    if not STATE.quiet and not stderr_is_terminal():
        plain = PlainProgress(_plain_line)
        yield plain
        plain.close()  # not reached when the block raised: the error line follows the last progress line
        return
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


def task_callback(p, description: str):
    """A ``progress(done, total)`` callback for the library that drives one task of ``p``."""
    task = p.add_task(description, total=None)

    def cb(done: int, total: int) -> None:
        p.update(task, completed=done, total=total)

    return cb


def complete_tasks(p, note: str = " (skipped)") -> None:
    """Fill every unfinished task of ``p``; ``note`` marks those that stopped short (the rest of their stage was skipped)."""
    for t in list(p.tasks):
        if t.finished:
            continue
        total = t.total if t.total else max(t.completed, 1)
        short = t.total is not None and t.completed < t.total
        p.update(t.id, total=total, completed=total, description=t.description + note if short else None)


def _plain_line(text: str) -> None:
    # no markup (descriptions hold model names), no wrapping: one progress step is one line of the log
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


class _PlainTask:
    def __init__(self, task_id: int, description: str, total: float | None, now: float):
        self.id = task_id
        self.description = description
        self.total = total
        self.completed: float = 0
        self.start = now
        self.last_line = now  # time of this task's last printed line
        self.last_bucket = 0  # PLAIN_STEP_PERCENT steps reached when the last line was printed
        self.moved = False  # progress reported since the last line
        self.done_printed = False
        self.partial_seen = False  # reported unfinished at least once: its time means something

    @property
    def finished(self) -> bool:
        return self.total is not None and self.total > 0 and self.completed >= self.total


class PlainProgress:
    """Progress as plain lines, for a stderr that is not a terminal (rich's live display draws nothing there).

    A task prints a line each time it passes another ``step`` percent, or after ``interval``
    seconds with progress but no line (never two within ``min_gap`` seconds), and one line when
    it completes; one that is complete at its first report (work done before) prints its count
    only. The first ``warmup`` seconds print nothing: the last lines of tasks done by then are
    printed when the warmup ends or, for a short command, by :meth:`close` at its normal end, so
    a command that fails early leaves its one-line error alone. The same calls as
    ``rich.progress.Progress``.
    """

    def __init__(self, write, *, step: float = PLAIN_STEP_PERCENT, interval: float = PLAIN_INTERVAL_S,
                 min_gap: float = PLAIN_MIN_GAP_S, warmup: float = PLAIN_WARMUP_S, clock=None):
        import threading
        import time

        self._write, self._step, self._interval, self._min_gap = write, step, interval, min_gap
        self._clock = clock or time.monotonic
        self._warm_until = self._clock() + warmup
        self._held: list[str] = []  # last lines of tasks done during the warmup, in order
        self._live = warmup <= 0
        self._tasks: dict[int, _PlainTask] = {}
        self._lock = threading.Lock()

    @property
    def tasks(self) -> list[_PlainTask]:
        return list(self._tasks.values())

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        with self._lock:
            tid = len(self._tasks)
            self._tasks[tid] = _PlainTask(tid, description, total, self._clock())
            return tid

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **_: object) -> None:
        with self._lock:
            t = self._tasks[task_id]
            before = (t.completed, t.description)
            if total is not None:
                t.total = total
            if advance is not None:
                t.completed += advance
            if completed is not None:
                t.completed = completed
            if description is not None:
                t.description = description
            t.moved = t.moved or (t.completed, t.description) != before
            now = self._clock()
            live = self._go_live(now)
            if t.finished:
                if not t.done_printed:
                    t.done_printed = True
                    if live:
                        self._emit(t, now)
                    else:
                        t.last_line, t.moved = now, False
                        self._held.append(self._line(t, now))
                return
            t.partial_seen = True
            if not live or not t.moved or now - t.last_line < self._min_gap:
                return
            bucket = int(100 * t.completed / t.total // self._step) if t.total else 0
            if bucket > t.last_bucket or now - t.last_line >= self._interval:
                t.last_bucket = max(bucket, t.last_bucket)
                self._emit(t, now)

    def close(self) -> None:
        """At the display's normal end: the held lines, then the last state of every task whose last change has no line."""
        with self._lock:
            now = self._clock()
            self._go_live(now, force=True)
            for t in self._tasks.values():
                if t.moved and not t.done_printed:
                    self._emit(t, now)

    def _go_live(self, now: float, force: bool = False) -> bool:
        if not self._live and (force or now >= self._warm_until):
            self._live = True
            for line in self._held:
                self._write(line)
            self._held.clear()
        return self._live

    def _emit(self, t: _PlainTask, now: float) -> None:
        t.last_line, t.moved = now, False
        self._write(self._line(t, now))

    def _line(self, t: _PlainTask, now: float) -> str:
        done = _count(t.completed)
        if not t.total:
            return t.description + (f": {done}" if t.completed else "") + f", {now - t.start:.1f} s"
        head = f"{t.description}: {done}/{_count(t.total)}"
        if t.finished and not t.partial_seen:
            return head  # complete at its first report: nothing was timed
        pct = 100 * t.completed / t.total
        elapsed = now - t.start
        tail = f" ({pct:.0f}%), {elapsed:.1f} s"
        if not t.finished and t.completed > 0:
            tail += f", about {elapsed * (t.total - t.completed) / t.completed:.0f} s left"
        return head + tail


def _count(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def print_table(table, console: Console | None = None) -> None:
    """Print a rich table (or other renderable) on ``console`` (default: stderr).

    On a terminal it fits the terminal. Elsewhere (a CI log, `2> log`) it is printed at its
    full natural width with plain ASCII rules and no colour, so no cell is cut to "con…".
    """
    console = console or err_console
    if _is_terminal(console.file):
        console.print(table)
        return
    from rich import box

    if hasattr(table, "box") and table.box is not None:
        table.box = box.ASCII
    wide = Console(width=1 << 16, color_system=None, force_terminal=False)
    width = max(1, wide.measure(table).maximum)
    plain = Console(file=console.file, width=width, color_system=None, force_terminal=False, highlight=False,
                    emoji=False, legacy_windows=False)
    plain.print(table, crop=False)


def info(msg: str) -> None:
    if not STATE.quiet:
        err_console.print(msg, soft_wrap=not stderr_is_terminal())


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", soft_wrap=not stderr_is_terminal())


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
AmpOpt = typer.Option(S.AMP, "--amp", help="Autocast: bf16, fp16 (GPU) or off.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr.")
ArchOpt = typer.Option(None, "--arch", help="Architecture for a weights-only file: a timm name or digits/<arch>.")
ModelKwargsOpt = typer.Option(
    None, "--model-kwargs",
    help="timm.create_model arguments the weights were made with, e.g. in_chans=1,num_classes=10 (repeat the option or separate with commas; values are read "
    "as int, float, true/false, none or text).",
)
CodeOpt = typer.Option(
    False, "--allow-code-execution", "--allow-pickle",
    help="Run code a model file carries: load a pickled model or TorchScript, or a .pt2 outside the pure-operator check. "
    "Only for files you trust (--allow-pickle is the old name).",
)
PretrainedOpt = typer.Option(True, "--pretrained/--random-init", help="timm names: load pretrained weights (default) or use random init (benchmarks, tests).")
MeanOpt = typer.Option(None, "--mean", help="Override normalization mean, e.g. 0.485,0.456,0.406.")
StdOpt = typer.Option(None, "--std", help="Override normalization std, e.g. 0.229,0.224,0.225.")
InputSizeOpt = typer.Option(None, "--input-size", help="Override the model's input size C,H,W (e.g. 3,224,224).")
DataOpt = typer.Option(
    S.DATA, "--data",
    help="digits | digits:train | an image folder (one sub-folder per class, or flat with --labels) | a .safetensors data file (images + labels tensors).",
)
LabelsOpt = typer.Option(
    None, "--labels",
    help="Labels of a flat image folder (--data DIR): Kaggle's LOC_val_solution.csv (synset ids) or filename,label lines; synsets map to timm's ImageNet class "
    "order.",
)
NOpt = typer.Option(
    None, "--n",
    help="Draw a class-stratified, seeded sample of N images (satkit: N // classes per class, the rest to seeded random classes, so 5000 over ImageNet's 1000 "
    "classes is 5 per class; the paper: a 10 % sample of the ImageNet validation set, 5,000 images, without saying how it was drawn). Default: all. Range: "
    f"{L.N.text}.",
)
DataSeedOpt = typer.Option(S.DATA_SEED, "--data-seed", help="Seed of the --n sample.")
CanvasOpt = typer.Option(None, "--canvas", help=f"Canvas size in px every model sees (default: 16 for digits, 224 for folders). Range: {L.CANVAS.text}.")


# Attack choice and attack-specific options, shared by `attack` and `study`. The help texts are
# written here (importing the registry would import torch for every --help); a test keeps them
# in step with satkit.attacks.ATTACKS.
AttackOpt = typer.Option(
    S.ATTACK, "--attack",
    help="pgd (the paper's: Madry et al.), mifgsm (momentum, Dong et al.), vmifgsm (variance-tuned MI-FGSM, Wang & He), apgd-ce (APGD with cross-entropy, "
    "Croce & Hein: AutoAttack's core) or lf-pgd (PGD in a low-frequency DCT band). All L-infinity, untargeted; see docs/attacks.md.",
)
StepsOpt = typer.Option(
    S.STEPS, "--steps",
    help=f"Attack iterations (paper: {S.STEPS} PGD steps). vmifgsm costs 1 + --vmi-samples gradients per step. Range: {L.STEPS.text}.",
)
StepSizeOpt = typer.Option(
    None, "--step-size",
    help=f"Step per iteration, pixel scale. Default: {S.MADRY_STEP_RULE} (pgd, lf-pgd), eps/steps (mifgsm, vmifgsm), 2*eps initial step halved at checkpoints "
    "(apgd-ce).",
)
DecayOpt = typer.Option(None, "--decay", help="mifgsm, vmifgsm: momentum decay mu. Default 1.0.")
VmiSamplesOpt = typer.Option(None, "--vmi-samples", help="vmifgsm: neighbours per step for the gradient variance (N). Default 20.")
VmiBetaOpt = typer.Option(None, "--vmi-beta", help="vmifgsm: neighbourhood radius in units of eps. Default 1.5.")
RhoOpt = typer.Option(None, "--rho", help="apgd-ce: fraction of improving steps below which a checkpoint halves the step. Default 0.75.")
BandOpt = typer.Option(None, "--band", help="lf-pgd: fraction of DCT frequencies kept along each image axis. Default 0.25.")


EPS_DEFAULTS = f"{S.DIGITS_EPS:g} for digits (see docs/study.md), {round(S.NATURAL_EPS * 255)}/255 otherwise"
EpsOpt = typer.Option(
    None, "--eps",
    help=f"L-infinity budget in pixel scale [0, 1]; a fraction like 8/255 is fine. Default: {EPS_DEFAULTS} (the same in every command). uint8 files store "
    "floor(255 eps)/255.",
)
SeedOpt = typer.Option(S.SEED, "--seed", help="Seed of the attack's random start and sampling (per sample).")
StorageOpt = typer.Option(S.STORAGE, "--storage", help="Storage dtype of clean/adv images: uint8, float16 or float32.")
EpsSOpt = typer.Option(S.EPS_S, "--eps-s", help=f"SAT floor in percent: SAT = ln(max(eps_s, transfer %)). Default {S.EPS_S:g} keeps SAT in [0, ln 100].")
KOpt = typer.Option(None, "-k", "--k", help=f"Number of clusters (default: chosen by the eigengap). Range: {L.K.text}.")
ClusterMethodOpt = typer.Option(
    S.CLUSTER_METHOD, "--cluster-method",
    help="Spectral clustering: paper (the paper's procedure) or njw (rows normalized); see satkit cluster --help. Recorded in study.json; approx --study "
    "follows it.",
)
CiOpt = typer.Option(None, "--ci", help="Add percentile-bootstrap confidence intervals at this level (e.g. 0.95) to sat_long.csv.")
NBootOpt = typer.Option(S.N_BOOT, "--n-boot", help=f"Bootstrap resamples for --ci (and --precision); at least 2/(1-ci). Range: {L.N_BOOT.text}.")


AttackAllOpt = typer.Option(
    False, "--attack-all",
    help="Attack every sample. Default: only those the model classifies correctly, the only ones SAT, approx and ensembles read; the others are stored with "
    "clean pixels as adv (source_correct marks them).",
)


def attack_params(data: str, attack: str, eps: Optional[str], steps: int, step_size: Optional[str],
                  seed: int, storage: str, random_start: Optional[bool] = None, attack_all: bool = False, **options):
    """AttackParams from CLI values; ``options`` maps option keywords (decay, samples, ...) to a value or None."""
    from satkit.attacks import AttackParams
    from satkit.data import default_eps

    return AttackParams(
        eps=parse_fraction(eps, "--eps") if eps else default_eps(data), steps=steps,  # precedence: satkit.settings
        step_size=parse_fraction(step_size, "--step-size") if step_size else None,
        random_start=random_start, seed=seed, storage=storage, attack=attack, attack_all=attack_all,
        options={k: v for k, v in options.items() if v is not None},
    )


def model_options(arch, allow_code, pretrained, mean=None, std=None, input_size=None, name=None, model_kwargs=None):
    from satkit.models import ModelOptions

    return ModelOptions(
        arch=arch, allow_code=allow_code, pretrained=pretrained,
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"),
        input_size=parse_input_size(input_size), name=name, model_kwargs=parse_model_kwargs(model_kwargs),
    )


_KWARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_model_kwargs(values: Optional[list[str]]) -> dict[str, object]:
    """``--model-kwargs in_chans=1,num_classes=10`` (or the option repeated) -> {"in_chans": 1, "num_classes": 10}."""
    out: dict[str, object] = {}
    for item in (part.strip() for v in values or () for part in v.split(",")):
        if not item:
            continue
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not _KWARG_NAME.fullmatch(key) or not raw:
            fail(f"--model-kwargs takes NAME=VALUE pairs (e.g. in_chans=1,num_classes=10), got '{item}'")
        if key in out:
            fail(f"--model-kwargs gives {key} twice")
        out[key] = _kwarg_value(raw)
    return out


def _kwarg_value(raw: str) -> object:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def set_quiet(quiet: bool) -> None:
    if quiet:
        STATE.quiet = True


def fail(msg: str) -> None:
    """Raise a usage-style SatkitError from the CLI layer."""
    raise ParameterError(msg)


BatchSizeHelp = (
    "Images per batch, or 'auto': the largest power of two that fits in GPU memory (CUDA), or the smallest that runs near full speed "
    f"(CPU; probed with a few timed steps). Default: auto on CUDA, 128 elsewhere; {L.BATCH_SIZE.text}."
)
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


DEFAULT_BATCH = None  # satkit.jobs.DEFAULT_BATCH_SIZE: the device's default (satkit.models.batching.default_batch_size)


def rerun_line() -> str | None:
    """The command line being run, shell-quoted, for the file's provenance (when run as `satkit`)."""
    from satkit.provenance import shell_quote

    return shell_quote(["satkit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("satkit") else None


def batch_size_value(value: Optional[str]):
    """``--batch-size``: a positive integer, ``auto``, or None (not given: the device's default)."""
    from satkit.models.batching import parse_batch_size

    return None if value is None else parse_batch_size(value)
