"""Stored pixels: the dtypes satkit files hold images in, and how they read back as [0, 1] floats.

Writers (attacks) and readers (verification, transfer, models) share these rules,
so they live with the files at the bottom of the package.
"""

from __future__ import annotations

import math

import torch

STORAGE_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}


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
