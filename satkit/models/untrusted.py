"""Loading model files that may be hostile without running code from them.

Three formats are programs: a pickle names any importable callable (``os.system``)
and the unpickler calls it; a TorchScript file carries code the TorchScript
interpreter runs, with every ATen operator at hand (``torch.from_file`` maps any
file writable); a ``.pt2`` names operators and carries text torch evaluates.
Pickles and TorchScript run only with ``allow_code`` (CLI ``--allow-code-execution``).
A ``.pt2`` is admitted without it only after these checks:

1. :func:`no_code_from_files`: while a model file is loaded, an audit hook
   (PEP 578) refuses every ``pickle.find_class`` in this thread. Every Python
   unpickler (C ``_pickle`` and pure-Python ``pickle``, whatever wraps them)
   resolves globals through ``find_class``, and a pickle cannot call anything
   it has not resolved, so no pickle can run code while the guard is on.
   torch's ``weights_only`` unpickler does not use ``find_class`` (it checks an
   allowlist of tensor types), so plain weights still load. A loader that
   swallows the refusal does not matter: the guard remembers it and the load
   fails afterwards. (``torch.export.load`` falls back to
   ``torch.load(weights_only=False)`` and ``pickle.loads`` for some payloads.)
2. :func:`check_pt2_archive`: before torch opens the archive, it is refused when
   it declares pickled payloads, custom objects, compiled AOTInductor code, the
   legacy layout, compressed or oversized entries (a zip bomb), or a program
   outside :mod:`satkit.models.export_check`'s allow-list of pure tensor operators.
3. After loading, :func:`satkit.models.export_check.check_graph_module` checks the
   graph's operator objects again, including where in-place operators write.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterator

from satkit.errors import ModelError

_state = threading.local()
_installed = False
_install_lock = threading.Lock()


class _PickleRefused(Exception):
    """Raised inside an unpickler's find_class while the guard is on (never reaches the user)."""


def _audit(event: str, args: tuple) -> None:
    if event == "pickle.find_class" and getattr(_state, "depth", 0) > 0:
        if _state.refused is None:
            _state.refused = f"{args[0]}.{args[1]}"
        raise _PickleRefused(f"unpickling {args[0]}.{args[1]} refused")


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)  # cannot be removed; it is inert while no guard is on
            _installed = True


class _Guard:
    refused: str | None = None


@contextlib.contextmanager
def no_code_from_files(path: str | Path) -> Iterator[_Guard]:
    """Refuse any unpickling of globals in this thread; raise :class:`ModelError` if one was tried.

    The error is raised even when the loader caught the refusal and went on.
    """
    _install()
    guard = _Guard()
    outer = getattr(_state, "depth", 0)
    if outer == 0:
        _state.refused = None
    _state.depth = outer + 1
    try:
        try:
            yield guard
        except Exception:
            if _state.refused is None:
                raise
        guard.refused = _state.refused
    finally:
        _state.depth = outer
    if guard.refused is not None:
        raise ModelError(
            f"{path}: loading it would unpickle {guard.refused}, which runs code from the file; "
            "pass --allow-code-execution only if you trust the file"
        )


_PT2_SAFE_PREFIXES = ("tensor_",)  # constants stored as raw tensor bytes
_CODE_HINT = "pass --allow-code-execution only if you trust the file"
# The JSON entries satkit reads itself (program, weight/constant configs). A ViT-L's program with stack
# traces is tens of MB; the cap bounds memory for a crafted archive.
_MAX_JSON_BYTES = 256 * 2**20


def _read_capped(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: Path) -> bytes:
    if info.file_size > _MAX_JSON_BYTES:
        raise ModelError(f"{where}: damaged torch.export archive ({info.filename} declares {info.file_size} bytes)")
    with z.open(info) as fh:
        data = fh.read(_MAX_JSON_BYTES + 1)
    if len(data) > _MAX_JSON_BYTES:
        raise ModelError(f"{where}: damaged torch.export archive ({info.filename} is larger than it declares)")
    return data


def _read_json(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: Path, rel: str) -> Any:
    try:
        return json.loads(_read_capped(z, info, where).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelError(f"{where}: damaged torch.export archive ({rel} is not valid JSON)") from None


def check_pt2_archive(path: str | Path) -> None:
    """Refuse a ``.pt2`` archive that could run code or exhaust memory when torch opens it.

    Before torch reads anything: every entry is stored uncompressed (what ``torch.export.save``
    writes) and declares no more bytes than the file holds, so no entry inflates beyond the file
    (a zip bomb); no payload is pickled; and each program passes
    :func:`satkit.models.export_check.check_serialized_program` (pure tensor operators only).
    """
    from satkit.models.export_check import check_serialized_program

    p = Path(path)
    try:
        size = p.stat().st_size
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if not any(n.endswith("/archive_format") or n == "archive_format" for n in names):
                raise ModelError(f"{p}: not a torch.export archive of this torch's layout (legacy archives unpickle); {_CODE_HINT}")
            declared = 0
            for i in infos:
                declared += i.file_size
                if i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size or declared > size:
                    raise ModelError(
                        f"{p}: damaged torch.export archive ({i.filename} is compressed or larger than the file; "
                        "torch.export.save stores entries as they are)"
                    )
            programs = 0
            for i in infos:
                n = i.filename
                rel = n.split("/", 1)[1] if "/" in n else n
                if rel.startswith("data/aotinductor/"):
                    raise ModelError(f"{p}: holds compiled AOTInductor code, which satkit does not run")
                if rel.startswith("data/constants/") and not rel.endswith(".json"):
                    leaf = rel.rsplit("/", 1)[1]
                    if not leaf.startswith(_PT2_SAFE_PREFIXES):
                        raise ModelError(f"{p}: holds a pickled constant ({leaf}); {_CODE_HINT}")
                if rel.endswith("_config.json") and (rel.startswith("data/weights/") or rel.startswith("data/constants/")):
                    cfg = _read_json(z, i, p, rel)
                    try:
                        entries = cfg.get("config", {}).values()
                        pickled = [e for e in entries if not isinstance(e, dict) or e.get("use_pickle")]
                    except AttributeError:
                        raise ModelError(f"{p}: damaged torch.export archive ({rel} is not a weights config)") from None
                    if pickled:
                        raise ModelError(f"{p}: declares pickled weights or constants ({rel}); {_CODE_HINT}")
                if rel.startswith("models/") and rel.endswith(".json"):
                    check_serialized_program(_read_json(z, i, p, rel), str(p))
                    programs += 1
            if programs == 0:
                raise ModelError(f"{p}: damaged torch.export archive (no program in models/)")
    except zipfile.BadZipFile:
        raise ModelError(f"{p}: not a torch.export archive (not a zip file)") from None
    except OSError as e:
        raise ModelError(f"{p}: cannot read ({e.strerror})") from None
