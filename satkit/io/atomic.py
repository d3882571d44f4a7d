"""The one gate every output file passes: checked before any work, written atomically.

Writing goes to a temporary file in the target directory, then a rename. A
killed run therefore leaves either the old file or the complete new one under
the final name, never a partial file. Temporary names start with ``.`` and end
with ``.partial`` so they are easy to spot and clean up.

Because the rename replaces the directory entry, an output must be a regular
file path: a device or FIFO would be replaced by a file (and ``/dev/null``
destroyed), so those are refused. An output that is also one of the command's
inputs is refused too (:func:`check_outputs`), so no run ever destroys its input.
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
        raise OutputError(
            f"{p} is a device/FIFO, not a file; satkit replaces outputs atomically, "
            "so give a regular file path (or - for stdout)"
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
    named = [(opt, p) for opt, p in outputs.items() if p is not None and str(p) != "-"]
    ids = [_identity(p) for _, p in named]
    for j in range(len(named)):
        for i in range(j):
            if _same(ids[i], ids[j]):
                raise OutputError(
                    f"{named[i][0]} and {named[j][0]} name the same file {named[j][1]}; give each output its own path"
                )
    input_ids = []
    for q in inputs:
        if q is None or str(q) == "-" or not os.path.lexists(q):
            continue
        input_ids.append(_identity(q))
    for (opt, p), ident in zip(named, ids, strict=True):
        if any(_same(ident, inp) for inp in input_ids):
            raise OutputError(
                f"{opt} {p} is also an input; satkit never writes over its inputs: choose another output path"
            )
    for _, p in named:
        check_output_path(p)


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent or ".")
    except OSError as e:
        err = _write_error(e, final, final)
        raise (err or OutputError(f"cannot write to {final.parent}: {e.strerror}")) from None
    os.close(fd)
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
