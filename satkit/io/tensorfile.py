"""satkit's tensor files: safetensors with a format name, a version and provenance.

Layout of the safetensors metadata (all values are strings, as safetensors requires):

- ``format``: ``satkit.attack`` | ``satkit.logits`` | ``satkit.data``
- ``format_version``: integer, bumped on incompatible changes
- ``provenance``: JSON object -- everything needed to know where the file came
  from and how to rerun it (see docs/formats.md)

Reading checks all three and raises a one-line :class:`InputFileError` for
anything else, so a wrong file is an error and never a wrong number. What the
provenance means, and the checks of the tensors against it, belong to each
format's header (:mod:`satkit.formats`), which reads files through this module.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from satkit.errors import FormatVersionError, InputFileError
from satkit.io.atomic import atomic_output

# The newest version of each format this satkit reads and writes.
FORMAT_VERSIONS = {"satkit.attack": 1, "satkit.logits": 1, "satkit.data": 1}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file; cached per (path, size, mtime), since studies ask for a weights file's hash several times."""
    st = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) so files are byte-reproducible."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class TensorFile:
    """A satkit tensor file's container opened for reading: format, version, the stored provenance
    dict and tensor names; tensors load lazily (memory-mapped). :class:`satkit.formats.SatkitFile`
    adds the typed header."""

    path: Path
    format: str
    version: int
    provenance: dict[str, Any]
    keys: list[str] = field(default_factory=list)
    plain: bool = False  # a plain safetensors file (no satkit metadata) read as ``format``

    def get(self, name: str) -> torch.Tensor:
        if name not in self.keys:
            raise InputFileError(f"{self.path}: tensor '{name}' is missing; the file is incomplete or damaged")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_tensor(name)
        except Exception as e:  # safetensors raises its own error types
            raise InputFileError(f"{self.path}: cannot read tensor '{name}' ({_one_line(e)})") from None

    def head(self, name: str, k: int) -> torch.Tensor:
        """The first ``k`` rows of tensor ``name``, without reading the rest of it."""
        if name not in self.keys:
            raise InputFileError(f"{self.path}: tensor '{name}' is missing; the file is incomplete or damaged")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_slice(name)[:k]
        except Exception as e:
            raise InputFileError(f"{self.path}: cannot read tensor '{name}' ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def write_tensor_file(
    path: str | os.PathLike,
    fmt: str,
    tensors: Mapping[str, torch.Tensor],
    provenance: Mapping[str, Any],
) -> Path:
    """Write tensors + metadata atomically. Tensors are made contiguous CPU tensors.

    ``provenance`` is a header's ``to_dict()`` (:func:`satkit.formats.write_satkit_file`)."""
    if fmt not in FORMAT_VERSIONS:
        raise ValueError(f"unknown format {fmt}")
    meta = {
        "format": fmt,
        "format_version": str(FORMAT_VERSIONS[fmt]),
        "provenance": canonical_json(dict(provenance)),
    }
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    if str(path) == "-":
        _write_stdout(data, meta)
        return Path("-")
    with atomic_output(path) as tmp:
        save_file(data, str(tmp), metadata=meta)
        canonicalize_header(tmp)
    return Path(path)


def canonicalize_header(path: str | os.PathLike) -> None:
    """Rewrite the safetensors JSON header with sorted keys, in place.

    safetensors serializes its header from a hash map whose order changes from
    run to run; sorting makes equal content give byte-identical files
    (same inputs, same seed: same bytes). Reordering keeps the length, so data offsets hold.
    """
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        new = sorted_header(fh.read(n))
        if new is not None:
            fh.seek(8)
            fh.write(new)


def sorted_header(raw: bytes) -> bytes | None:
    """The header JSON with sorted keys, padded to the same length; None if it would grow
    (cannot happen for a pure reordering: keep the original rather than corrupt offsets)."""
    new = json.dumps(json.loads(raw.decode("utf-8")), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return new + b" " * (len(raw) - len(new)) if len(new) <= len(raw) else None


def read_tensor_file(path: str | os.PathLike, expected: str | tuple[str, ...], plain: str | None = None) -> TensorFile:
    """Open a satkit file, checking it exists, parses, and has the expected format and version.

    Only the container is checked here (and that the provenance is a JSON object);
    :func:`satkit.formats.read_satkit_file` reads the header and verifies the tensors.
    ``plain``: a format (one of ``expected``) that a safetensors file without satkit
    metadata is read as, with empty provenance (``satkit.data``: tensors a user saved
    with ``safetensors.torch.save_file``).
    """
    expected_t = (expected,) if isinstance(expected, str) else tuple(expected)
    what = " or ".join(e.split(".")[1] for e in expected_t)
    if str(path) == "-":
        return _read_stdin(expected_t, what, plain)
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file")
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, expected a satkit {what} file")
    if p.stat().st_size == 0:
        raise InputFileError(f"{p}: file is empty; rerun the command that makes it")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except Exception as e:
        raise InputFileError(
            f"{p}: not a readable safetensors file ({_one_line(e)}); it may be truncated or of another format"
        ) from None
    fmt = meta.get("format")
    if fmt is None and plain is not None and plain in expected_t:
        return TensorFile(path=p, format=plain, version=FORMAT_VERSIONS[plain], provenance={}, keys=keys, plain=True)
    if fmt is None or not fmt.startswith("satkit."):
        raise InputFileError(
            f"{p}: a safetensors file but not one satkit wrote (no satkit format metadata); expected a satkit {what} file"
        )
    if fmt not in expected_t:
        raise InputFileError(f"{p}: is a {fmt} file, expected {' or '.join(expected_t)}")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise InputFileError(f"{p}: invalid format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSIONS[fmt]:
        raise FormatVersionError(
            f"{p}: {fmt} format version {version} is newer than this satkit reads ({FORMAT_VERSIONS[fmt]}); upgrade satkit"
        )
    try:
        prov = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError:
        raise InputFileError(f"{p}: provenance metadata is not valid JSON; the file is damaged") from None
    if not isinstance(prov, dict):  # even a peek reads fields from it
        raise InputFileError(f"{p}: provenance is malformed (not a JSON object); the file is damaged or was edited")
    return TensorFile(path=p, format=fmt, version=version, provenance=prov, keys=keys)


# ----------------------------------------------------------------------------- "-": stdout / stdin


def _write_stdout(data: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    """The bytes the file version holds (same sorted header), on stdout; no file is created."""
    from safetensors.torch import save

    buf = bytearray(save(dict(data), metadata=dict(meta)))
    n = int.from_bytes(buf[:8], "little")
    new = sorted_header(bytes(buf[8 : 8 + n]))
    if new is not None:
        buf[8 : 8 + n] = new
    out = sys.stdout.buffer
    out.write(bytes(buf))
    out.flush()


class _StdinTensorFile(TensorFile):
    """A satkit file spooled from stdin: ``path`` is the spool, messages say stdin."""

    def get(self, name: str) -> torch.Tensor:
        from satkit.errors import SatkitError

        try:
            return super().get(name)
        except SatkitError as e:
            raise type(e)(str(e).replace(str(self.path), "stdin")) from None


# The spool of the current stdin stream. safetensors memory-maps its files, so a
# pipe must land in a real file first; holding the stream object (not its id)
# keeps a later, different stdin (tests run many commands in one process) from
# reusing another stream's spool.
_STDIN_SPOOL: dict[str, Any] = {}


def _remove_spool(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stdin_spool() -> None:
    """Remove the stdin spool now (the CLI's SIGTERM handler: atexit does not run on a signal)."""
    path = _STDIN_SPOOL.get("path") or _STDIN_SPOOL.get("pending")
    if path is not None:
        _remove_spool(str(path))


def _spool_stdin(what: str) -> Path:
    stream = sys.stdin
    if _STDIN_SPOOL.get("stream") is stream:
        return _STDIN_SPOOL["path"]
    if stream is None:
        raise InputFileError(f"stdin: no input stream; give a satkit {what} file path instead of -")
    if stream.isatty():
        raise InputFileError(f"stdin is a terminal; pipe a satkit {what} file in or give its path instead of -")
    src = getattr(stream, "buffer", stream)
    try:
        fd, tmp = tempfile.mkstemp(prefix="satkit-stdin-", suffix=".safetensors")
    except OSError as e:
        raise InputFileError(f"stdin: cannot spool it to a temporary file ({e.strerror}); set TMPDIR to a writable directory") from None
    atexit.register(_remove_spool, tmp)
    _STDIN_SPOOL["pending"] = tmp  # while it fills: a SIGTERM handler can find it
    try:
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
    except OSError as e:
        _remove_spool(tmp)
        raise InputFileError(f"stdin: cannot spool it to {tmp} ({e.strerror}); set TMPDIR to a directory with space") from None
    if os.path.getsize(tmp) == 0:
        _remove_spool(tmp)
        raise InputFileError(f"stdin: empty input, expected a satkit {what} file")
    _STDIN_SPOOL.update(stream=stream, path=Path(tmp))
    return Path(tmp)


def _read_stdin(expected: tuple[str, ...], what: str, plain: str | None) -> TensorFile:
    from satkit.errors import SatkitError

    spool = _spool_stdin(what)
    try:
        f = read_tensor_file(spool, expected, plain=plain)
    except SatkitError as e:
        raise type(e)(str(e).replace(str(spool), "stdin")) from None
    return _StdinTensorFile(**{fld.name: getattr(f, fld.name) for fld in dataclasses.fields(f) if fld.init})
