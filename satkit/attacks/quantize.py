"""Rounding adversarial images to the storage dtype without breaking the bound.

After this, ``max |adv - clean| <= eps`` and ``0 <= adv <= 1`` hold exactly on
the STORED values (compared in float64), which is what every later step reads.
"""

from __future__ import annotations

import torch

from satkit.io.pixels import STORAGE_DTYPES, as_float, eps_steps_uint8  # noqa: F401  (the stored-pixel rules live with the files)


def clean_for_storage(clean_u8: torch.Tensor, storage: str) -> torch.Tensor:
    """The clean images as stored (uint8 stays; float dtypes hold k/255 rounded to the dtype)."""
    if storage == "uint8":
        return clean_u8
    return (clean_u8.to(torch.float32) / 255.0).to(STORAGE_DTYPES[storage])


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
