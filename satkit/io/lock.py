"""One satkit run per directory: an advisory lock on ``DIR/.satkit.lock``.

Two runs writing the same study directory would interleave their outputs, so a
run holds this lock while it works. ``flock`` locks belong to the open file and
vanish when the process dies, so a killed run never leaves a stale lock behind.
The lock file itself is never deleted: removing it while another process waits
on it would let a third process lock a new file of the same name, and two runs
would both hold "the" lock.

The lock file is opened without following links and must be a plain file with
one name (not a symbolic link, FIFO, device or hard link): a planted
``.satkit.lock -> ../victim`` would otherwise be created or truncated by every run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Callable, Optional, Union

from satkit.errors import OutputError

LOCK_NAME = ".satkit.lock"


class DirectoryLock:
    """Context manager holding the lock of ``directory`` for one satkit run.

    When another run holds it: with ``wait=False`` (default) raise
    :class:`OutputError` naming that run (pid, start time); with ``wait=True``
    call ``on_wait(message)`` once and block until it is free. Nothing is
    written while the lock is held by someone else; the holder records its pid,
    host and start time in the lock file for that message.
    """

    def __init__(
        self,
        directory: Union[str, os.PathLike],
        what: str = "study",
        *,
        wait: bool = False,
        on_wait: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.directory = Path(directory)
        self.what = what
        self.wait = wait
        self.on_wait = on_wait
        self.path = self.directory / LOCK_NAME
        self._fd: Optional[int] = None

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this DirectoryLock")
        if not self.directory.is_dir():
            raise OutputError(f"{self.what} directory {self.directory} does not exist; create it first")
        # no O_TRUNC: the current holder's record must survive our open. O_NOFOLLOW: a planted
        # link (.satkit.lock -> ../victim) must not make us create or truncate its target;
        # O_NONBLOCK | O_NOCTTY: a FIFO or device in its place must not hang us or become our terminal
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP or os.path.islink(self.path):
                raise OutputError(self._not_a_file("a symbolic link")) from None
            if e.errno in (errno.ENXIO, errno.EISDIR):
                raise OutputError(self._not_a_file("not a regular file")) from None
            raise OutputError(
                f"cannot create the lock file {self.path} ({e.strerror}); choose a writable {self.what} directory"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OutputError(self._not_a_file("not a regular file"))
            if st.st_nlink > 1:  # a hard link: truncating our record would truncate the other name too
                raise OutputError(self._not_a_file("a hard link to another file"))
            if not self._try_lock(fd):
                message = self._held_message(fd)
                if not self.wait:
                    raise OutputError(message)
                if self.on_wait is not None:
                    self.on_wait(message)
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._record(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _not_a_file(self, what: str) -> str:
        return (f"the lock file {self.path} is {what}; satkit never writes through it: "
                f"remove it (satkit creates a plain one) or choose another {self.what} directory")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # a stale record would name a finished run
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            raise OutputError(
                f"cannot lock {self.path} ({e.strerror}); the file system may not support locks: "
                f"use a {self.what} directory on a local disk"
            ) from None

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        except OSError:
            pass  # the record only improves the message another run shows; the lock holds without it

    def _held_message(self, fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
        except (OSError, ValueError):
            info = {}
        details = []
        if isinstance(info, dict):
            if isinstance(info.get("pid"), int):
                pid = f"pid {info['pid']}"
                host = info.get("host")
                if isinstance(host, str) and host != socket.gethostname():
                    pid += f" on {host}"
                details.append(pid)
            if isinstance(info.get("started"), (int, float)):
                details.append("started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])))
        who = f"another satkit run ({', '.join(details)})" if details else "another satkit run"
        return f"{self.directory} is in use by {who}; wait for it or use another directory"
