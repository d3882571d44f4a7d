"""Projected gradient descent, L-infinity (Madry et al. 2018), untargeted, on [0, 1] pixels.

The loop stays on the device: no ``.item()``, no host sync, no Python branching
on tensor values. Parameters are frozen by the wrapper, so the backward pass
computes only the gradient with respect to the input.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from satkit.attacks.base import register_attack
from satkit.settings import MADRY_STEP_RULE, madry_step


def ce_logit_direction(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the per-sample cross-entropy with respect to the logits, divided by ``1 - p_y``.

    That gradient is ``p - onehot(y)``; dividing row ``i`` by ``1 - p_y = sum_{j != y} p_j``
    (positive) gives ``q - onehot(y)`` with ``q`` the softmax over the other classes:
    every row has largest magnitude 1 (its label entry is -1), whatever the logit
    margin, and each sample's input gradient keeps its direction and sign. Computed
    in float32 from log-probabilities, so nothing underflows or cancels.
    """
    z = logits.detach().float()
    other = z.scatter(1, y.view(-1, 1), float("-inf"))
    g = torch.softmax(other, dim=1)
    return g.scatter_(1, y.view(-1, 1), -1.0)


def summed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample with its label, summed, in float32.

    ``F.cross_entropy``'s NLL kernel has no deterministic CUDA version (it adds with
    atomics); a gather of the log-probabilities has, and back-propagates the same
    gradient bit for bit (-1 at each label, 0 elsewhere, into the log-softmax).
    """
    return -torch.log_softmax(logits.float(), dim=1).gather(1, y.view(-1, 1)).sum()


@register_attack(
    "pgd", summary="projected gradient descent with sign steps (the paper's attack)", reference="Madry et al. 2018",
    step_rule=MADRY_STEP_RULE, default_step=madry_step, random_start=True,
)
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
    noise=None,  # PGD draws nothing inside its loop
) -> torch.Tensor:
    """Return adversarial images within ``[x - eps, x + eps] ∩ [0, 1]`` (float32).

    ``init`` is the random start, a tensor of U(-eps, eps) noise made by the
    caller (so it can be seeded per sample, independent of batching), or None.
    Gradients come from :func:`ce_input_grad` (its fp16 rule included).
    """
    lo = (x - eps).clamp_(min=0.0)
    hi = (x + eps).clamp_(max=1.0)
    adv = x.clone() if init is None else torch.max(torch.min(x + init, hi), lo)
    for _ in range(steps):
        grad = ce_input_grad(model, adv, y, amp_dtype)
        adv = adv.detach().add_(signed(grad), alpha=alpha)
        adv = torch.max(torch.min(adv, hi), lo)
    return adv.detach()


def ce_input_grad(model: nn.Module, adv: torch.Tensor, y: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The gradient of the summed cross-entropy with respect to the input ``adv``, one forward and one backward.

    Under fp16 autocast the loss gradient enters the model's fp16 graph at the
    logits. ``p - onehot(y)`` has magnitude ``~exp(-margin)`` there, so past a
    logit margin of ~17 it flushes to zero in fp16 and the sample stops moving;
    fp16 therefore back-propagates :func:`ce_logit_direction` instead (the same
    gradient scaled per sample by a positive factor: sign steps are unchanged).
    fp32 and bf16 (fp32's exponent range) take the plain summed cross-entropy.
    """
    adv = adv.detach().requires_grad_(True)
    autocast = (
        torch.autocast(device_type=adv.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    with autocast:
        logits = model(adv)
    if amp_dtype is torch.float16:
        (grad,) = torch.autograd.grad(logits, adv, grad_outputs=ce_logit_direction(logits, y).to(logits.dtype))
    else:
        # sum, not mean: the sign step ignores scale, and a mean would shrink each sample's gradient with the batch size
        (grad,) = torch.autograd.grad(summed_ce(logits, y), adv)
    return grad


def signed(grad: torch.Tensor) -> torch.Tensor:
    """``sign(grad)``, but NaN where ``grad`` is NaN or inf (``grad`` is overwritten).

    sign() maps NaN to 0, which would leave a sample silently unattacked; adding 0 * grad
    (0 for a finite gradient, NaN for NaN or inf) carries a non-finite gradient into the
    adversarial batch, which the runner checks once per batch.
    """
    return grad.sign().add_(grad.mul_(0.0))
