"""Provenance common to every file satkit writes (versions; no timestamps, so reruns are byte-identical)."""

from __future__ import annotations

import platform
from typing import Any, Callable

import torch

ProgressFn = Callable[[int, int], None]
"""Progress callback: ``progress(done, total)`` in the unit the caller documents."""


def versions() -> dict[str, str]:
    import timm

    import satkit

    return {"satkit": satkit.__version__, "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}


def data_provenance(data: Any) -> dict[str, Any]:
    return {
        "source": data.source,
        "fingerprint": data.fingerprint,
        "n": len(data),
        "num_classes": data.num_classes,
        "canvas": list(data.canvas),
        "sampling": {k: data.info.get(k) for k in ("n", "seed", "split") if k in data.info},
    }


def shell_quote(args: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in args)
