"""Temporary ``.partial`` files: who writes one, and when one is stale.

:func:`satkit.io.atomic.atomic_output` writes every output to a temporary file
``.<name>.<random>.<host>@<pid>.partial`` next to it and renames it over the
final name. A killed run leaves its temporary behind, and the next run removes
it (:func:`remove_stale_partials`). The shards of one study (``--shard i/n``)
share the directory without the study lock, so a shard's cleanup must never
remove another shard's temporary while that shard is still writing it.

A temporary is therefore removed only when its writer is provably gone:

- the writer holds an exclusive ``flock`` on it from creation to rename. The
  kernel drops the lock when the writer exits or is killed (even ``kill -9``),
  so a lock that can be taken means no live writer; this holds across
  processes, containers on one kernel, and hosts on a network file system
  with working locks;
- its name records the writer's host and pid: on this host the pid must not
  be running either (this covers file systems where ``flock`` is a local no-op,
  and the moment between creating the file and locking it);
- a temporary written on another host (whose pid cannot be checked from here)
  needs, besides a free lock, no change for :data:`FOREIGN_STALE_S` seconds;
- a temporary without a writer in its name (satkit before this scheme)
  needs a free lock.

Anything that is not a regular file (a symbolic link, a FIFO named like a
temporary) is left alone.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Optional, Union

try:  # POSIX; elsewhere the pid and age rules still hold
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

PathArg = Union[str, os.PathLike]

# A temporary of another host is stale only after this many seconds without a change
# (a writer modifies its temporary while writing it; the write of one output takes seconds).
FOREIGN_STALE_S = 600

_WRITER = re.compile(r"\.([A-Za-z0-9-]{1,32})@(\d{1,10})\.partial$")


def host_tag() -> str:
    """This host's name as it appears in temporary names: letters, digits and '-', at most 32 characters."""
    return (re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-") or "host")[:32]


def partial_suffix() -> str:
    """The end of this process's temporary names: ``.<host>@<pid>.partial``."""
    return f".{host_tag()}@{os.getpid()}.partial"


def hold(fd: int) -> bool:
    """Take the writer's lock on the temporary open as ``fd`` (kept until ``fd`` is closed); False if unsupported."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # no locks on this file system: the pid in the name still protects the file
        return False


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we can check: assume a writer
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def writer_gone(path: PathArg, *, now: Optional[float] = None) -> bool:
    """Whether the temporary ``path`` has no live writer (the rules in the module docstring)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False  # a link, gone, or unreadable: not ours to remove
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a writer holds it
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    return False  # no locks here (the errnos above): decide by the name alone
        m = _WRITER.search(os.fsdecode(os.path.basename(os.fspath(path))))
        if m is None:
            return True  # written before writers were named: a free lock is all we can know
        host, pid = m.group(1), int(m.group(2))
        if host == host_tag():
            return not _pid_running(pid)
        age = (time.time() if now is None else now) - st.st_mtime
        return age > FOREIGN_STALE_S
    finally:
        os.close(fd)  # releases the lock we may have taken


def remove_stale_partials(directory: PathArg) -> list[Path]:
    """Remove the temporaries in ``directory`` (not below it) whose writer is gone; returns what was removed.

    ``directory`` itself is not followed when it is a symbolic link (nothing is
    removed through a link); a missing directory has nothing to remove.
    """
    d = Path(directory)
    try:
        if stat.S_ISLNK(os.lstat(d).st_mode):
            return []
        entries = list(os.scandir(d))
    except OSError:
        return []
    removed = []
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".partial")):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
        except OSError:
            continue
        if writer_gone(e.path):
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed
