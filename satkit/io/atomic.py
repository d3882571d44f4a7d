"""The one gate every output file passes: checked before any work, written atomically.

Writing goes to a temporary file in the target directory, then a rename. A
killed run therefore leaves either the old file or the complete new one under
the final name, never a partial file. Temporary names start with ``.`` and end
with ``.partial`` so they are easy to spot and clean up.

Because the rename replaces the directory entry, an output must be a regular
file path: a device or FIFO would be replaced by a file, so those are refused,
except the null device, the shell's "run it, keep nothing": an output there is
written to a temporary file that is then removed (:func:`is_null_device`). An output that is also one of the command's
inputs is refused too (:func:`check_outputs`), so no run ever destroys its input.
An input may be a directory (an image folder, a study's ``attacks/``): it stands
for every file under it, so an output inside it is refused.

Temporaries record their writer and are locked while written (see
:mod:`satkit.io.partials`), so a cleanup removes only those whose writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Union

from satkit.errors import OutputError
from satkit.io import partials

PathArg = Union[str, os.PathLike]

# errno -> (what went wrong, what to do), for failures while writing an output
_WRITE_ERRORS = {
    errno.ENOSPC: ("no space left on device", "free some space or choose an output on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose an output on another disk"),
    errno.EFBIG: ("file too large for the file system", "choose an output on another file system"),
    errno.EROFS: ("read-only file system", "choose a writable output path"),
    errno.EIO: ("I/O error (the disk or network file system failed)", "check the disk and retry"),
}

_UMASK_LOCK = threading.Lock()


def is_null_device(path: PathArg) -> bool:
    """``path`` is the null device (``/dev/null`` or a link to it): an output there is discarded."""
    try:
        st, null = os.stat(path), os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def check_output_path(path: PathArg) -> Path:
    """Fail early (before any expensive work) when ``path`` cannot be written.

    ``-`` (stdout) is the caller's business and never reaches here.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks: a link to /dev/null is a device too
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"output path {p}: cannot check it ({e.strerror}); choose another output path") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        if is_null_device(p):
            return p
        raise OutputError(
            f"{p} is a device/FIFO, not a file; satkit replaces outputs atomically, "
            f"so give a regular file path (or - for stdout, or {os.devnull} to keep nothing)"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {parent} is not writable; choose another -o path")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output path {p} is a directory; give a file name")
    if st is not None and not os.access(p, os.W_OK):
        raise OutputError(f"output file {p} exists and is read-only")
    return p


def _identity(path: PathArg) -> tuple[Path, Optional[tuple[int, int]]]:
    """(resolved path, (st_dev, st_ino) when the file exists): two names of one file share one of them."""
    p = Path(path)
    try:
        resolved = p.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the name as given
        resolved = Path(os.path.abspath(p))
    try:
        st = os.stat(p)
        inode = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return resolved, inode


def _same(a: tuple[Path, Optional[tuple[int, int]]], b: tuple[Path, Optional[tuple[int, int]]]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def check_outputs(
    outputs: Mapping[str, Optional[PathArg]],
    inputs: Iterable[Optional[PathArg]] = (),
) -> None:
    """Check all outputs of a command at once, before any work.

    ``outputs`` maps an option name (as the user types it, e.g. ``-o``) to its
    path; ``None`` and ``-`` (stdout) are skipped. Refuses two options naming the
    same file, an output that is also an input (same resolved path or same
    inode: hard links and symlinks count), then checks each path with
    :func:`check_output_path`. Inputs that do not exist are ignored here; the
    code reading them reports that.
    """
    named = [(opt, p) for opt, p in outputs.items() if p is not None and str(p) != "-" and not is_null_device(p)]
    ids = [_identity(p) for _, p in named]
    for j in range(len(named)):
        for i in range(j):
            if _same(ids[i], ids[j]):
                raise OutputError(
                    f"{named[i][0]} and {named[j][0]} name the same file {named[j][1]}; give each output its own path"
                )
    files, trees = split_inputs(inputs)
    for opt, p in named:
        check_not_input(opt, p, files, trees)
    for _, p in named:
        check_output_path(p)


def split_inputs(inputs: Iterable[Optional[PathArg]]) -> tuple[list[tuple[Path, Optional[tuple[int, int]]]], list[Path]]:
    """(identities of the input files, input directories) of ``inputs``; absent ones and ``-`` are dropped."""
    files, trees = [], []
    for q in inputs:
        if q is None or str(q) == "-" or not os.path.lexists(q):
            continue
        if os.path.isdir(q):
            trees.append(Path(q))
        else:
            files.append(_identity(q))
    return files, trees


def check_not_input(
    opt: str,
    path: PathArg,
    files: list[tuple[Path, Optional[tuple[int, int]]]],
    trees: list[Path],
) -> None:
    """Refuse output ``path`` (given as option ``opt``) when it is one of the input ``files`` (same
    resolved path or inode) or lies in an input directory of ``trees`` (see :func:`in_tree`).

    ``path`` may be a directory that a command fills (a study): it must then not
    overlap an input directory either way.
    """
    ident = _identity(path)
    if any(_same(ident, inp) for inp in files):
        raise OutputError(f"{opt} {path} is also an input; satkit never writes over its inputs: choose another output path")
    for t in trees:
        if in_tree(ident, t) or (os.path.isdir(path) and in_tree(_identity(t), path)):
            raise OutputError(
                f"{opt} {path} lies in {t}, which this command reads (is also an input); "
                "satkit never writes over its inputs: choose an output outside it"
            )


# Entries looked at, at most, when comparing an existing output with the files of an input directory
TREE_SCAN_LIMIT = 200_000


def in_tree(ident: tuple[Path, Optional[tuple[int, int]]], tree: PathArg) -> bool:
    """Whether the file ``ident`` (from :func:`_identity`) is one of the files of directory ``tree``.

    Inside it by resolved path (symbolic links and ``..`` resolved), or, for a
    file that exists, the same inode as a file in it or in one of its direct
    sub-folders (what an image folder holds: class folders of images; links
    followed as the loader follows them). The second test reads only directory
    entries (no stat per file) and runs only when the output exists, so a
    folder of 50,000 images costs a directory listing, not 50,000 stats.
    """
    root = _identity(tree)[0]
    if ident[0] == root or root in ident[0].parents:
        return True
    if ident[1] is None:
        return False
    dev, ino = ident[1]
    seen = 0
    dirs = [Path(tree)]
    for depth in range(2):
        nxt = []
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                seen += 1
                if seen > TREE_SCAN_LIMIT:
                    return False
                try:
                    if e.is_symlink():
                        st = os.stat(e.path)
                        if (st.st_dev, st.st_ino) == (dev, ino):
                            return True
                        if depth == 0 and stat.S_ISDIR(st.st_mode):
                            nxt.append(Path(e.path))
                    elif e.is_dir(follow_symlinks=False):
                        if depth == 0:
                            nxt.append(Path(e.path))
                    elif e.inode() == ino and e.stat(follow_symlinks=False).st_dev == dev:
                        return True
                except OSError:
                    continue
        dirs = nxt
    return False


def current_umask() -> int:
    """The process umask, read without leaving it changed."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # os.umask can only be read by setting it; the lock keeps concurrent callers here consistent
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _output_mode(final: Path) -> int:
    """A replaced file keeps its permission bits; a new one gets what open() would give it."""
    try:
        return stat.S_IMODE(os.stat(final).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _write_error(e: BaseException, final: Path, tmp: Path) -> Optional[OutputError]:
    """An OutputError for a failed write of ``final``, or None when ``e`` is not a write failure.

    Rust-backed writers (polars, safetensors) report the OS error only in their
    message, as ``(os error 28)``.
    """
    code = None
    if isinstance(e, OSError) and e.errno is not None:  # polars raises OSError("... (os error 28)") with no errno
        code = e.errno
        if code not in _WRITE_ERRORS and e.filename is not None and str(e.filename) in (str(tmp), str(final)):
            return OutputError(f"cannot write {final} ({e.strerror or e}); choose another output path")
    else:
        m = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(e))
        if m:
            code = int(m.group(1) or m.group(2))
    if code in _WRITE_ERRORS:
        what, todo = _WRITE_ERRORS[code]
        return OutputError(f"{what} writing {final}; {todo}")
    return None


def write_failure(e: BaseException, final: PathArg) -> OutputError:
    """A one-line :class:`OutputError` for any failure of a writer on ``final``, naming the path and the cause.

    Disk full, quota, read-only file system and the like are named as such (also
    when a Rust-backed writer gives no errno); anything else quotes the writer.
    """
    final = Path(final)
    known = _write_error(e, final, final)
    if known is not None:
        return known
    cause = " ".join(str(e).split())[:160] or type(e).__name__
    return OutputError(f"cannot write {final} ({cause}); choose another output path")


@contextlib.contextmanager
def atomic_output(path: PathArg) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any failure the temporary file is removed and an existing ``path`` is
    left untouched; a full disk or another write failure becomes one-line
    :class:`OutputError`.
    """
    final = check_output_path(path)
    if is_null_device(final):
        yield from _discarded(final)
        return
    suffix = partials.partial_suffix()
    # the temporary's name stays within the usual 255-byte limit however long the final name is
    stem = final.name[: max(1, 255 - len(suffix) - 10)]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix, dir=final.parent or ".")
    except OSError as e:
        err = _write_error(e, final, final)
        raise (err or OutputError(f"cannot write to {final.parent}: {e.strerror}")) from None
    # held until the rename: another run's cleanup (a shard sharing the directory) sees a live writer
    partials.hold(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except Exception as e:
            err = _write_error(e, final, tmp_path)
            if err is not None:
                raise err from None
            raise
        try:
            # make the data durable before the rename makes it visible
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, _output_mode(final))
            os.replace(tmp_path, final)
        except OSError as e:
            raise (_write_error(e, final, tmp_path) or OutputError(
                f"cannot write {final} ({e.strerror or e}); choose another output path")) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    finally:
        os.close(fd)


def _discarded(final: Path) -> Iterator[Path]:
    """The null device as an output: the writer writes a private temporary file, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="satkit-null-") as d:
        tmp = Path(d) / final.name
        try:
            yield tmp
        except Exception as e:
            err = _write_error(e, final, tmp)
            if err is not None:
                raise err from None
            raise
