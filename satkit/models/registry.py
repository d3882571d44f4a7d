"""Resolve a model spec to a :class:`LoadedModel`: one table of spec forms, one entry point.

:data:`SCHEMES` lists every way to name a model, first match wins; each row's loader is a
small module in :mod:`satkit.models.loaders`. What every load shares happens once, in
:func:`load_model`: the file-exists check, the untrusted-file guard (nothing may unpickle
code without ``allow_code``, see :mod:`satkit.models.untrusted`), silencing the libraries'
own logging, the display-name override and the move to the device.

``model_kwargs`` (CLI ``--model-kwargs``) are passed to ``timm.create_model``, so weights of
a timm model built with non-default arguments (``in_chans=1``, ``num_classes=10``) load.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from satkit.errors import ModelError
from satkit.io.cells import check_model_name
from satkit.io.tensorfile import file_sha256
from satkit.models.loaders import code, export, timm, weights, zoo
from satkit.models.spec import (  # noqa: F401 (re-exported: the names callers import from here)
    HF_HUB_PREFIX,
    ZOO_PREFIX,
    ModelOptions,
    is_zoo_name,
    looks_like_path,
    model_display_name,
)
from satkit.models.untrusted import no_code_from_files
from satkit.models.wrapper import LoadedModel


def _suffix(*suffixes: str) -> Callable[[str, ModelOptions], bool]:
    return lambda s, opts: looks_like_path(s) and s.endswith(suffixes)


def _file_weights_id(s: str, opts: ModelOptions) -> str | None:
    p = Path(os.path.expanduser(s))
    return "sha256:" + file_sha256(p)[:16] if p.is_file() else None


def _on_path(load: Callable[[Path, str, ModelOptions], LoadedModel]) -> Callable[[str, str, ModelOptions], LoadedModel]:
    return lambda s, spec, opts: load(Path(os.path.expanduser(s)), spec, opts)


@dataclass(frozen=True)
class Scheme:
    """One way to name a model: which specs it takes, how it loads them, their weights id without loading."""

    form: str  # as the docs and errors say it
    takes: Callable[[str, ModelOptions], bool]
    load: Callable[[str, str, ModelOptions], LoadedModel]  # (stripped spec, spec as given, options)
    weights_id: Callable[[str, ModelOptions], str | None]
    is_file: bool = False


# First match wins. A path is any spec with a path separator, a leading "." or a model-file suffix.
SCHEMES: tuple[Scheme, ...] = (
    Scheme("digits/<name> (built-in zoo)", lambda s, o: is_zoo_name(s), lambda s, spec, o: zoo.load(s, o), zoo.weights_id),
    Scheme("FILE.safetensors with --arch", _suffix(".safetensors"), _on_path(weights.load_safetensors), _file_weights_id,
           is_file=True),
    Scheme("FILE.pt2 (torch.export)", _suffix(".pt2"), _on_path(export.load), _file_weights_id, is_file=True),
    Scheme("FILE.pt/.pth/.bin state dict with --arch", lambda s, o: looks_like_path(s) and bool(o.arch),
           _on_path(weights.load_state_dict), _file_weights_id, is_file=True),
    Scheme("FILE.pt/.ts TorchScript or pickled model", lambda s, o: looks_like_path(s), _on_path(code.load),
           _file_weights_id, is_file=True),
    Scheme("hf-hub:ORG/REPO or a timm name[.tag]", lambda s, o: True, lambda s, spec, o: timm.load(s, o), timm.weights_id),
)


def scheme_of(spec: str, opts: ModelOptions | None = None) -> Scheme:
    opts = opts or ModelOptions()
    s = spec.strip()
    return next(sc for sc in SCHEMES if sc.takes(s, opts))


def expected_weights_id(spec: str, opts: ModelOptions | None = None) -> str | None:
    """The weights id :func:`load_model` would record, computed without building the model.

    Used to decide whether stored results are still valid. None when it cannot be
    told cheaply (then the caller loads the model).
    """
    opts = opts or ModelOptions()
    try:
        return scheme_of(spec, opts).weights_id(spec.strip(), opts)
    except Exception:
        return None


def load_model(spec: str, opts: ModelOptions | None = None, device: torch.device | str = "cpu") -> LoadedModel:
    """Resolve ``spec`` (see :data:`SCHEMES`) to an eval-mode, frozen, wrapped model on ``device``."""
    opts = opts or ModelOptions()
    s = spec.strip()
    if not s:
        raise ModelError("empty model spec; give a timm name, digits/<name>, or a model file")
    scheme = scheme_of(s, opts)
    if scheme.is_file and not Path(os.path.expanduser(s)).exists():
        raise ModelError(f"model file {Path(os.path.expanduser(s))} not found")
    guard = contextlib.nullcontext() if opts.allow_code else no_code_from_files(s)
    with guard, _quiet():  # loaders log their own tracebacks (torch.export's fallbacks); errors come as ModelError
        lm = scheme.load(s, spec, opts)
    if opts.name:
        lm.name = check_model_name(opts.name, from_option=True)
    lm.module.to(device)
    return lm


@contextlib.contextmanager
def _quiet():
    # timm/hf-hub/torch log and warn on their own; keep the library silent.
    import logging
    import warnings

    old = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(old)


def ensure_num_classes(lm: LoadedModel, sample: torch.Tensor) -> int:
    """For file models with unknown head size, run one forward to learn it."""
    if lm.num_classes:
        return lm.num_classes
    with torch.inference_mode():
        out = lm.module(sample[:1])
    if out.ndim != 2:
        raise ModelError(f"{lm.name}: expected logits of shape (N, classes), got {tuple(out.shape)}")
    lm.num_classes = int(out.shape[1])
    return lm.num_classes


def prepare_model(lm: LoadedModel, *, compile: bool = False) -> LoadedModel:
    """Optional ``torch.compile`` of the wrapped module (``--compile``); weights and provenance are unchanged.

    Compilation happens on the first batch (tens of seconds for a ResNet on CPU,
    and again for a smaller last batch); it pays off on GPUs with long attacks.

    Each compiled model starts from empty compile caches (``torch.compiler.reset()``):
    dynamo keys its caches by code object, every wrapped model runs the same
    ``forward``, and after its recompile limit (8 graphs) it silently runs a function
    eagerly: without a reset a process would stop compiling after the 4th to 8th model.
    So a process compiles one model at a time; one compiled earlier recompiles if used again.
    """
    if compile:
        try:
            torch.compiler.reset()
            lm.module = torch.compile(lm.module)
        except Exception as e:  # no compiler backend on this platform
            raise ModelError(f"--compile: torch.compile is not available here ({' '.join(str(e).split())[:160]})") from None
    return lm
