"""Reading and writing satkit tensor files through their typed headers.

:func:`read_satkit_file` opens a file (:mod:`satkit.io.tensorfile`: bytes, format name
and version, the provenance JSON), and with ``verify`` parses its header and checks
the tensors against it before anything uses them. ``verify=False`` only peeks: the
header is parsed when first asked for (``f.header``), with the same one-line errors.
:func:`write_satkit_file` stores a header's ``to_dict()``: the dict exists only here,
at the file boundary.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from satkit.errors import DataError, SatkitError
from satkit.formats import attack, data, logits
from satkit.formats.attack import AttackHeader
from satkit.formats.data import DataHeader
from satkit.formats.logits import LogitsHeader
from satkit.io import tensorfile
from satkit.io.tensorfile import TensorFile
from satkit.io.tensorview import file_tensors

Header = AttackHeader | LogitsHeader | DataHeader

# format name -> (header class, what to do about a bad file)
HEADERS: dict[str, tuple[type, str]] = {
    attack.FORMAT: (AttackHeader, attack.TODO),
    logits.FORMAT: (LogitsHeader, logits.TODO),
    data.FORMAT: (DataHeader, data.TODO),
}


class SatkitFile:
    """A satkit tensor file opened for reading: its typed ``header``, tensors loaded lazily (memory-mapped).

    ``provenance`` is the stored dict, for showing the file as it is (``satkit info --json``);
    code reads ``header``.
    """

    def __init__(self, raw: TensorFile, where: str):
        self.raw, self.where = raw, where

    path = property(lambda self: self.raw.path)
    format = property(lambda self: self.raw.format)
    version = property(lambda self: self.raw.version)
    keys = property(lambda self: self.raw.keys)
    plain = property(lambda self: self.raw.plain)
    provenance = property(lambda self: self.raw.provenance)

    def get(self, name: str) -> torch.Tensor:
        return self.raw.get(name)

    def head(self, name: str, k: int) -> torch.Tensor:
        return self.raw.head(name, k)

    @functools.cached_property
    def header(self) -> Any:
        cls, todo = HEADERS[self.format]
        return cls.from_dict(self.provenance, self.where, todo=self._todo(todo))

    def _todo(self, todo: str) -> str:
        return data.TENSORS_NOTE if self.plain else todo

    def verify(self) -> None:
        """Check the tensors against the header; a one-line :class:`SatkitError` on the first defect."""
        h = self.header
        with file_tensors(self.path, self.keys) as t:
            if self.plain:
                absent = [k for k in ("images", "labels") if not t.has(k)]
                if absent:
                    held = ", ".join(sorted(self.keys)[:5]) + (", ..." if len(self.keys) > 5 else "") or "no tensors"
                    raise DataError(f"{self.where}: a safetensors file without satkit metadata, read as a data file, but "
                                    f"tensor '{absent[0]}' is missing (it holds {held}); {data.TENSORS_NOTE}")
            h.verify(t, self.where, todo=self._todo(HEADERS[self.format][1]))


def verify_file(f: SatkitFile) -> None:
    """Run the checks of ``f``'s format (a file opened with ``verify=False`` and now used)."""
    _on_stdin(f.raw, f.verify) if f.where == "stdin" else f.verify()


def _on_stdin(raw: TensorFile, fn) -> Any:
    """Errors about the stdin spool name stdin."""
    try:
        return fn()
    except SatkitError as e:
        raise type(e)(str(e).replace(str(raw.path), "stdin")) from None


def read_satkit_file(path: str | os.PathLike, expected: str | tuple[str, ...], verify: bool = True,
                     plain: str | None = None) -> SatkitFile:
    """Open a satkit file of an ``expected`` format and, with ``verify``, check it against its header.

    ``plain``: a format (one of ``expected``) that a safetensors file without satkit
    metadata is read as, with empty provenance (``satkit.data``); verified all the same.
    """
    raw = tensorfile.read_tensor_file(path, expected, plain=plain)
    f = SatkitFile(raw, "stdin" if str(path) == "-" else str(raw.path))
    if verify:
        verify_file(f)
    return f


def write_satkit_file(path: str | os.PathLike, header: Header, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` with ``header`` (as its ``to_dict()``) atomically; ``-`` is stdout."""
    fmt = next(name for name, (cls, _) in HEADERS.items() if isinstance(header, cls))
    return tensorfile.write_tensor_file(path, fmt, tensors, header.to_dict())
