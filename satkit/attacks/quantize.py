"""Rounding adversarial images to the storage dtype without breaking the bound.

After this, ``max |adv - clean| <= eps`` and ``0 <= adv <= 1`` hold exactly on
the STORED values (compared in float64), which is what every later step reads.
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


def clean_for_storage(clean_u8: torch.Tensor, storage: str) -> torch.Tensor:
    """The clean images as stored (uint8 stays; float dtypes hold k/255 rounded to the dtype)."""
    if storage == "uint8":
        return clean_u8
    return (clean_u8.to(torch.float32) / 255.0).to(STORAGE_DTYPES[storage])


def as_float(stored: torch.Tensor) -> torch.Tensor:
    """Stored images -> float32 pixels in [0, 1] (exact for every storage dtype)."""
    if stored.dtype == torch.uint8:
        return stored.to(torch.float32) / 255.0
    return stored.to(torch.float32)


def quantize_adv(adv: torch.Tensor, clean_stored: torch.Tensor, eps: float, storage: str) -> torch.Tensor:
    """Round float ``adv`` to the storage dtype, then pull any element outside the bound back in."""
    if storage == "uint8":
        k = eps_steps_uint8(eps)
        c = clean_stored.to(torch.int16)
        a = torch.round(adv.to(torch.float32) * 255.0).to(torch.int16)
        a = torch.minimum(torch.maximum(a, c - k), c + k).clamp_(0, 255)
        return a.to(torch.uint8)
    dt = STORAGE_DTYPES[storage]
    a = adv.to(dt).clamp(0, 1)
    c64 = clean_stored.to(torch.float64)
    for _ in range(8):  # each pass moves offending elements one ulp toward clean; 1 pass is the norm
        d = a.to(torch.float64) - c64
        over, under = d > eps, d < -eps
        if not (over.any() or under.any()):
            return a
        a = torch.where(over, torch.nextafter(a, torch.zeros_like(a)), a)
        a = torch.where(under, torch.nextafter(a, torch.ones_like(a)), a)
    d = a.to(torch.float64) - c64
    bad = (d.abs() > eps)
    return torch.where(bad, clean_stored, a)  # cannot happen in practice; never exceed the bound
