"""APGD-CE (Croce & Hein 2020, Algorithm 1): L-infinity, untargeted, cross-entropy, one restart.

PGD with momentum whose step size halves, per sample, at checkpoints where the
loss has stopped going up; the sample then restarts from its best-loss point.
Like :mod:`satkit.attacks.pgd`, the loop stays on the device: the checkpoints are
Python ints fixed up front, every per-sample decision is a ``torch.where``.
"""

from __future__ import annotations

import contextlib
from itertools import pairwise

import torch
import torch.nn as nn

from satkit.attacks.base import AttackOption, register_attack
from satkit.attacks.pgd import ce_logit_direction

MOMENTUM = 0.75  # the paper's alpha


def apgd_checkpoints(steps: int) -> list[int]:
    """The checkpoints ``w_j = ceil(p_j * steps)`` up to ``steps``, strictly increasing, ``w_0 = 0``.

    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, computed
    in integer hundredths: in floats 0.22 + 0.19 is 0.41000000000000003 and its ceil
    at 100 steps would be 42. For 100 steps: 0, 22, 41, 57, 70, 80, 87, 93, 99. For
    few steps two p_j can round to the same step; it is kept once (a zero-length
    window would halve every step size for nothing).
    """
    p = [0, 22]
    while p[-1] < 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    out: list[int] = []
    for pj in p:
        w = -(-pj * steps // 100)  # exact integer ceil
        if w <= steps and (not out or w > out[-1]):
            out.append(w)
    return out


def _per_sample(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


@register_attack(
    "apgd-ce", summary="auto-PGD: momentum, step size halved per sample when the loss stalls (AutoAttack's core)",
    reference="Croce & Hein 2020", step_rule="2*eps initial step, halved at checkpoints",
    default_step=lambda eps, steps: 2 * eps, random_start=True,
    gradients=lambda steps, options: steps + 1,  # the start is evaluated too
    options=(AttackOption("rho", "--rho", 0.75, "APGD: checkpoint success fraction below which the step is halved", 0.0, 1.0),),
)
def apgd_ce(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    alpha: float,
    init: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    noise=None,  # APGD draws nothing inside its loop
    rho: float = 0.75,
) -> torch.Tensor:
    """Return adversarial images within ``[x - eps, x + eps] ∩ [0, 1]`` (float32).

    ``alpha`` is the initial step size (2 * eps by default). The start is ``x + init``
    with ``init`` rescaled per sample to L-inf norm exactly ``eps`` (as the reference
    code draws its start: uniform noise scaled until its largest entry is +-eps, a
    random point on the ball's surface), then projected; ``x`` itself when ``init`` is None.

    Per sample the result is the latest iterate the model misclassifies (the
    reference code's ``x_best_adv``) or, for a sample never fooled, its highest-loss
    point. ``steps`` steps evaluate the model ``steps + 1`` times (the start too), each
    evaluation one forward + backward giving both the loss and its gradient.

    Checkpoint rule (paper, Sec. 3.2): at ``w_j`` a sample halves its step and goes
    back to its best point if (1) the loss went up in fewer than ``rho * (w_j - w_{j-1})``
    of the steps since ``w_{j-1}``, or (2) neither its step size nor its best loss
    changed since ``w_{j-1}``. fp16 autocast back-propagates
    :func:`satkit.attacks.pgd.ce_logit_direction`, as PGD does (the sign is the same).
    """
    lo = (x - eps).clamp_(min=0.0)
    hi = (x + eps).clamp_(max=1.0)

    def project(v: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(v, hi), lo)

    if init is None:
        x_cur = x.clone()
    else:
        peak = init.abs().flatten(1).amax(1).clamp_(min=1e-12)
        x_cur = project(x + init * _per_sample(eps / peak, x))
    autocast = (
        torch.autocast(device_type=x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    rescale = amp_dtype is torch.float16
    poison = torch.zeros(len(x), dtype=torch.float32, device=x.device)  # 0, or NaN once a gradient was non-finite

    def evaluate(v: torch.Tensor):
        """Per-sample loss, sign of its gradient, and whether the model is fooled at ``v``: one forward + backward."""
        nonlocal poison
        v = v.detach().requires_grad_(True)
        with autocast:
            logits = model(v)
        loss = -torch.log_softmax(logits.float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        if rescale:
            (grad,) = torch.autograd.grad(logits, v, grad_outputs=ce_logit_direction(logits, y).to(logits.dtype))
        else:
            # the sum, not the mean: each sample's gradient is its own loss's, whatever the batch size
            (grad,) = torch.autograd.grad(loss.sum(), v)
        # sign() maps NaN to 0; adding 0 * grad keeps a non-finite gradient visible (as in PGD), and
        # the per-sample poison carries it into the output even if that iterate is not the one returned
        g = grad.sign().add_(grad.mul_(0.0))
        poison = poison + g.flatten(1).sum(1).mul(0.0)
        return loss.detach(), g, logits.detach().argmax(1) != y

    best_loss, g, fooled = evaluate(x_cur)
    x_best, g_best = x_cur, g
    x_adv = x_cur  # the latest fooling iterate (meaningful where ``fooled``)
    x_prev = x_cur
    prev_loss = best_loss
    eta = torch.full_like(best_loss, float(alpha))
    increases = torch.zeros_like(best_loss)
    best_at_check = best_loss
    halved = torch.zeros_like(fooled)  # the paper's eta^(w_0) = eta^(w_1): condition 2 may fire at w_1
    checks = apgd_checkpoints(steps)
    window = {w: w - w0 for w0, w in pairwise(checks)}  # checkpoint -> steps since the previous one

    for k in range(steps):
        z = project(x_cur + _per_sample(eta, x) * g)
        a = 1.0 if k == 0 else MOMENTUM  # the first step has no previous step to carry
        x_next = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev))
        x_prev, x_cur = x_cur, x_next
        loss, g, fooled_now = evaluate(x_cur)

        x_adv = torch.where(_per_sample(fooled_now, x), x_cur, x_adv)
        fooled = fooled | fooled_now
        better = loss > best_loss  # strict, as the paper; NaN never counts
        x_best = torch.where(_per_sample(better, x), x_cur, x_best)
        g_best = torch.where(_per_sample(better, x), g, g_best)
        best_loss = torch.where(better, loss, best_loss)
        increases = increases + (loss > prev_loss).float()
        prev_loss = loss

        if k + 1 in window:  # x^(w_j) just evaluated
            stalled = increases < rho * window[k + 1]
            stuck = ~halved & (best_loss <= best_at_check)  # best loss only grows: <= means unchanged
            halved = stalled | stuck
            eta = torch.where(halved, eta * 0.5, eta)
            # restart from the best point, with its stored gradient (no extra evaluation); the momentum
            # term of the next step is then x_best - x^(w_j - 1), as in the paper and the reference
            x_cur = torch.where(_per_sample(halved, x), x_best, x_cur)
            g = torch.where(_per_sample(halved, x), g_best, g)
            prev_loss = torch.where(halved, best_loss, prev_loss)
            best_at_check = best_loss
            increases = torch.zeros_like(increases)

    out = torch.where(_per_sample(fooled, x), x_adv, x_best)
    return out.add_(_per_sample(poison, x)).detach()
