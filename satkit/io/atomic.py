"""Atomic output: write to a temporary file in the target directory, then rename.

A killed run therefore leaves either the old file or the complete new one under
the final name, never a partial file. Temporary names start with ``.`` and end
with ``.partial`` so they are easy to spot and clean up.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from satkit.errors import OutputError


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early (before any expensive work) when ``path`` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {parent} is not writable; choose another -o path")
    if p.is_dir():
        raise OutputError(f"output path {p} is a directory; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"output file {p} exists and is read-only")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``."""
    final = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent or ".")
    except OSError as e:
        raise OutputError(f"cannot write to {final.parent}: {e.strerror}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # make the data durable before the rename makes it visible
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
