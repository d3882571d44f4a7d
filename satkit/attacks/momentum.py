"""Transfer-oriented attacks: MI-FGSM (Dong et al. 2018) and VMI-FGSM (Wang & He 2021).

Both accumulate a momentum of L1-normalised gradients and step by its sign; the
momentum stabilises the update direction across iterations, which is what makes
their adversarials transfer better than PGD's. Published defaults: step
eps / steps, no random start, decay 1.0; VMI-FGSM adds the gradient variance of
20 neighbours drawn uniformly from a (1.5 eps)-ball.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from satkit.attacks.base import AttackOption, register_attack
from satkit.attacks.pgd import ce_input_grad, signed

DECAY = AttackOption("decay", "--decay", 1.0, "momentum decay factor mu (mifgsm, vmifgsm)", 0.0, 10.0)


def _l1_normalised(g: torch.Tensor) -> torch.Tensor:
    # the mean, not the sum, of |g|: a constant factor (sign steps ignore it) that keeps float32 sums small;
    # the tiny floor keeps an all-zero gradient at zero instead of NaN (a real NaN gradient still propagates)
    return g / g.abs().mean(dim=tuple(range(1, g.dim())), keepdim=True).clamp_min(1e-12)


@register_attack(
    "mifgsm", summary="momentum iterative FGSM (transfer-oriented)", reference="Dong et al. 2018",
    step_rule="eps/steps", default_step=lambda eps, steps: eps / steps, random_start=False, options=(DECAY,),
)
def mifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, alpha: float,
           init: torch.Tensor | None = None, amp_dtype: torch.dtype | None = None, noise=None,
           decay: float = 1.0) -> torch.Tensor:
    """``g <- decay * g + grad / |grad|_1``, ``x <- clip(x + alpha * sign(g))``; float32 in ``[x - eps, x + eps] ∩ [0, 1]``."""
    return vmifgsm(model, x, y, eps=eps, steps=steps, alpha=alpha, init=init, amp_dtype=amp_dtype, noise=noise,
                   decay=decay, samples=0, beta=0.0)


@register_attack(
    "vmifgsm", summary="variance-tuned MI-FGSM (transfer-oriented)", reference="Wang & He 2021",
    step_rule="eps/steps", default_step=lambda eps, steps: eps / steps, random_start=False,
    gradients=lambda steps, options: steps * (1 + options["samples"]),
    options=(
        DECAY,
        AttackOption("samples", "--vmi-samples", 20, "vmifgsm: neighbours per step for the gradient variance (N)", 1, 1000,
                     integer=True),
        AttackOption("beta", "--vmi-beta", 1.5, "vmifgsm: neighbourhood radius as a multiple of eps", 0.0, 100.0),
    ),
)
def vmifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, alpha: float,
            init: torch.Tensor | None = None, amp_dtype: torch.dtype | None = None, noise=None,
            decay: float = 1.0, samples: int = 20, beta: float = 1.5) -> torch.Tensor:
    """VMI-FGSM: ``g <- decay * g + (grad + v) / |grad + v|_1`` with ``v`` the mean neighbour gradient minus ``grad``.

    Neighbours ``x_t + r``, ``r ~ U(-beta eps, beta eps)`` per pixel, are not clipped to
    [0, 1] (as published: they probe the loss surface, they are not stored). The
    neighbours' noise comes from ``noise`` (seeded per sample). ``samples=0`` is MI-FGSM.
    """
    lo = (x - eps).clamp_(min=0.0)
    hi = (x + eps).clamp_(max=1.0)
    adv = x.clone() if init is None else torch.max(torch.min(x + init, hi), lo)
    momentum = torch.zeros_like(x)
    variance = torch.zeros_like(x)
    shape = tuple(x.shape[1:])
    for t in range(steps):
        grad = ce_input_grad(model, adv, y, amp_dtype)
        momentum.mul_(decay).add_(_l1_normalised(grad + variance))
        if samples:
            neighbours = torch.zeros_like(x)
            for k in range(samples):
                r = noise.uniform(t * samples + k, shape).mul_(beta * eps)
                neighbours.add_(ce_input_grad(model, adv + r, y, amp_dtype))
            variance = neighbours.div_(samples).sub_(grad)
        adv = adv.detach().add_(signed(momentum.clone()), alpha=alpha)
        adv = torch.max(torch.min(adv, hi), lo)
    return adv.detach()
