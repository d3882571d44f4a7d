"""Projected gradient descent, L-infinity (Madry et al. 2018), untargeted, on [0, 1] pixels.

The loop stays on the device: no ``.item()``, no host sync, no Python branching
on tensor values. Parameters are frozen by the wrapper, so the backward pass
computes only the gradient with respect to the input.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from satkit.attacks.base import register_attack


@register_attack("pgd")
def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    alpha: float,
    init: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return adversarial images within ``[x - eps, x + eps] ∩ [0, 1]`` (float32).

    ``init`` is the random start, a tensor of U(-eps, eps) noise made by the
    caller (so it can be seeded per sample, independent of batching), or None.
    """
    lo = (x - eps).clamp_(min=0.0)
    hi = (x + eps).clamp_(max=1.0)
    adv = x.clone() if init is None else torch.max(torch.min(x + init, hi), lo)
    autocast = (
        torch.autocast(device_type=x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    for _ in range(steps):
        adv.requires_grad_(True)
        with autocast:
            logits = model(adv)
        # sum, not mean: the sign step ignores scale, and sum avoids a batch-size dependent underflow in fp16
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach().add_(grad.sign_(), alpha=alpha)
        adv = torch.max(torch.min(adv, hi), lo)
    return adv.detach()
