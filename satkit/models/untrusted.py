"""Loading model files that may be hostile without running code from them.

Unpickling runs code: a pickle names any importable callable (``os.system``)
and the unpickler calls it. Loaders other than satkit's own can unpickle behind
our back -- ``torch.export.load`` falls back to ``torch.load(weights_only=False)``
for "pickled" weights, constants and sample inputs, and ``pickle.loads`` for
opaque constants. Two layers keep that from happening without ``--allow-pickle``:

1. :func:`no_code_from_files`: while a model file is loaded, an audit hook
   (PEP 578) refuses every ``pickle.find_class`` in this thread. Every Python
   unpickler (C ``_pickle`` and pure-Python ``pickle``, whatever wraps them)
   resolves globals through ``find_class``, and a pickle cannot call anything
   it has not resolved, so no pickle can run code while the guard is on.
   torch's ``weights_only`` unpickler does not use ``find_class`` (it checks an
   allowlist of tensor types), so plain weights still load. A loader that
   swallows the refusal does not matter: the guard remembers it and the load
   fails afterwards.
2. :func:`check_pt2_archive`: a ``.pt2`` archive is refused before torch opens
   it when it declares pickled payloads, custom objects (torchbind's C++
   unpickler, outside the audit hook's reach), compiled AOTInductor code, or
   uses the legacy layout, none of which a plain ``torch.export.save`` of a
   classifier writes.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import zipfile
from pathlib import Path
from typing import Iterator

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
            "pass --allow-pickle only if you trust the file"
        )


_PT2_SAFE_PREFIXES = ("tensor_",)  # constants stored as raw tensor bytes


def check_pt2_archive(path: str | Path) -> None:
    """Refuse a ``.pt2`` archive whose loading would deserialize objects other than raw tensors."""
    p = Path(path)
    hint = "pass --allow-pickle only if you trust the file"
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            if not any(n.endswith("/archive_format") or n == "archive_format" for n in names):
                raise ModelError(f"{p}: not a torch.export archive of this torch's layout (legacy archives unpickle); {hint}")
            for n in names:
                rel = n.split("/", 1)[1] if "/" in n else n
                if rel.startswith("data/aotinductor/"):
                    raise ModelError(f"{p}: holds compiled AOTInductor code, which satkit does not run")
                if rel.startswith("data/constants/") and not rel.endswith(".json"):
                    leaf = rel.rsplit("/", 1)[1]
                    if not leaf.startswith(_PT2_SAFE_PREFIXES):
                        raise ModelError(f"{p}: holds a pickled constant ({leaf}); {hint}")
                if rel.endswith("_config.json") and (rel.startswith("data/weights/") or rel.startswith("data/constants/")):
                    try:
                        cfg = json.loads(z.read(n).decode("utf-8"))
                        entries = cfg.get("config", {}).values()
                        pickled = [e for e in entries if not isinstance(e, dict) or e.get("use_pickle")]
                    except (ValueError, AttributeError, UnicodeDecodeError):
                        raise ModelError(f"{p}: damaged torch.export archive ({rel} is not valid JSON)") from None
                    if pickled:
                        raise ModelError(f"{p}: declares pickled weights or constants ({rel}); {hint}")
    except zipfile.BadZipFile:
        raise ModelError(f"{p}: not a torch.export archive (not a zip file)") from None
    except OSError as e:
        raise ModelError(f"{p}: cannot read ({e.strerror})") from None
