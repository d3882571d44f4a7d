"""What a model spec names, before anything is loaded: options, prefixes, display names.

Torch-free on purpose: tables and plans name models without building them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satkit.io.cells import check_model_name

ZOO_PREFIX = "digits/"
HF_HUB_PREFIX = "hf-hub:"
# suffixes that make a spec a file even without a path separator
FILE_SUFFIXES = (".safetensors", ".pt", ".pt2", ".pth", ".ts", ".bin")


@dataclass
class ModelOptions:
    """Options that change how a spec is resolved (CLI: --arch, --allow-code-execution, ...)."""

    arch: str | None = None
    allow_code: bool = False  # run code a model file carries (pickles, TorchScript, unchecked .pt2)
    pretrained: bool = True
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None
    interpolation: str | None = None
    name: str | None = None  # display name override
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments


def model_display_name(spec: str, opts: ModelOptions | None = None) -> str:
    """The name a model gets in tables: the zoo/timm name, or a file's stem.

    A name a spreadsheet would run as a formula (``=1+1.pt2``) is refused here, where
    names are made (:mod:`satkit.io.cells`).
    """
    return check_model_name(_display_name(spec, opts), from_option=bool(opts and opts.name))


def _display_name(spec: str, opts: ModelOptions | None) -> str:
    if opts and opts.name:
        return opts.name
    s = spec.strip()
    if s.startswith(ZOO_PREFIX):
        return s
    if looks_like_path(s):
        return Path(s).stem
    return s


def looks_like_path(s: str) -> bool:
    if s.startswith(HF_HUB_PREFIX):  # hub names hold a "/" but name no file
        return False
    return s.endswith(FILE_SUFFIXES) or os.sep in s or s.startswith(".")


def is_zoo_name(s: str) -> bool:
    return s.startswith(ZOO_PREFIX) and not looks_like_path(s.removeprefix(ZOO_PREFIX))


def short(e: BaseException) -> str:
    """An exception as one short line (library messages quote what torch/timm said)."""
    s = " ".join(str(e).split())
    return s[:180] + ("..." if len(s) > 180 else "")
