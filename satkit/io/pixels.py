"""Stored pixels: the dtypes satkit files hold images in, and how they read back as [0, 1] floats.

Writers (attacks) and readers (verification, transfer, models) share these rules,
so they live with the files at the bottom of the package.
"""

from __future__ import annotations

import math

import torch

STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}


def budget_text(eps: float, storage: str) -> str:
    """The budget as the stored files hold it: ``eps=0.1 (stored 25/255 = 0.098)`` for uint8, ``eps=0.1`` otherwise."""
    if storage != "uint8":
        return f"eps={eps:.4g}"
    k = eps_steps_uint8(eps)
    return f"eps={eps:.4g} (stored {k}/255 = {k / 255:.4g})"


def eps_steps_uint8(eps: float) -> int:
    """Largest k with k/255 <= eps (in float64): the bound in 8-bit steps."""
    k = math.floor(eps * 255)
    while (k + 1) / 255 <= eps:
        k += 1
    while k > 0 and k / 255 > eps:
        k -= 1
    return max(k, 0)


def as_float(stored: torch.Tensor) -> torch.Tensor:
    """Stored images -> float32 pixels in [0, 1] (exact for every storage dtype)."""
    if stored.dtype == torch.uint8:
        return stored.to(torch.float32) / 255.0
    return stored.to(torch.float32)


_UINT8_TABLES: dict[torch.device, torch.Tensor] = {}


def uint8_table(device: torch.device | str) -> torch.Tensor:
    """The 256 float32 values of 8-bit pixels, ``as_float`` of 0..255 computed on the CPU, on ``device``.

    CUDA divides by a scalar as a multiplication by its reciprocal, one ulp off the
    CPU's division for 126 of the 256 values; a lookup in this table gives every
    device the CPU's values.
    """
    device = torch.device(device)
    t = _UINT8_TABLES.get(device)
    if t is None:
        t = _UINT8_TABLES[device] = as_float(torch.arange(256, dtype=torch.uint8)).to(device)
    return t


def pixels_on(stored: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """``as_float(stored)`` computed where ``stored`` is (or on ``device``), with the CPU's values bit for bit.

    Uploading 8-bit images and converting them on the device moves a quarter of the
    bytes and keeps the conversion off the host. CPU tensors convert with ``as_float``.
    """
    if device is not None:
        stored = stored.to(device, non_blocking=True)
    if stored.dtype != torch.uint8 or stored.device.type == "cpu":
        return as_float(stored)
    return uint8_table(stored.device)[stored.int()]
