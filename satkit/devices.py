"""Device selection: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``."""

from __future__ import annotations

import re

import torch

from satkit.errors import DeviceError, ParameterError


def resolve_device(spec: str | None = "auto") -> torch.device:
    """Turn a ``--device`` value into a torch.device, or raise a one-line DeviceError."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' is not available on this machine; use --device cpu or auto")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", s)
    if m:
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{spec}' requested but CUDA is not available here; use --device cpu or auto")
        idx = int(m.group(1) or 0)
        n = torch.cuda.device_count()
        if idx >= n:
            raise DeviceError(f"device '{spec}' does not exist: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", idx)
    raise DeviceError(f"unknown device '{spec}'; use cpu, cuda, cuda:N, mps or auto")


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--amp``; fp16 autocast needs CUDA (or MPS)."""
    a = (amp or "off").lower()
    if a not in AMP_DTYPES:
        raise ParameterError(f"unknown --amp '{amp}'; use bf16, fp16 or off")
    dt = AMP_DTYPES[a]
    if dt is torch.float16 and device.type == "cpu":
        raise ParameterError("--amp fp16 needs a GPU; on CPU use --amp bf16 or off")
    return dt
