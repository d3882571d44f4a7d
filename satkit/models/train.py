"""The training loop of satkit: digits-zoo training and distillation both run :func:`fit`.

The recipe: AdamW, linear warm-up then cosine decay per step (:func:`lr_factor`),
cross-entropy with label smoothing, random integer shifts of the canvas
(:func:`random_shift`); optionally a distillation term, computed per batch by
the caller (``extra_loss``) or from a teacher's precomputed logits
(``teacher_logits``, the zoo's ``kd`` variants). Inputs go through
:func:`satkit.models.wrapper.preprocess`, the function the evaluation wrapper
uses, so training and evaluation see the same preprocessing.

Determinism: a private generator seeded with ``10_000 + seed`` draws the data
order and the shifts, in a fixed order (one permutation per epoch, then per batch
the row offsets and the column offsets), so the same seed, data, torch version and
thread count give bit-identical weights -- the packaged zoo weights depend on it.
The offset keeps this stream unrelated to the initialization, which callers seed
with ``seed`` through the global RNG.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from satkit.errors import ModelError
from satkit.io.pixels import as_float
from satkit.models.wrapper import DataConfig, preprocess
from satkit.provenance import ProgressFn

ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total``: linear warm-up, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift], zero fill.

    Draws nothing from ``gen`` when ``max_shift <= 0``.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n,1,h,1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (n,1,1,w)
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; to a GPU through page-locked memory, a copy that does not wait for the device."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    module: nn.Module, cfg: DataConfig, images: torch.Tensor, *, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Predicted classes (int64, CPU) of a bare module on stored canvas images, through :func:`preprocess`.

    Runs in eval mode and restores the module's previous mode; ``device`` defaults
    to where the module's parameters are.
    """
    dev = device if device is not None else _device_of(module)
    was_training = module.training
    module.eval()
    preds = torch.empty(len(images), dtype=torch.int64)
    for i in range(0, len(images), batch_size):
        x = preprocess(as_float(images[i : i + batch_size]).to(dev), cfg)
        preds[i : i + batch_size] = module(x).argmax(1).cpu()
    module.train(was_training)
    return preds


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``preds`` equal to ``labels`` (NaN when empty)."""
    return int((preds == labels).sum()) / len(labels) if len(labels) else float("nan")


def fit(
    module: nn.Module,
    cfg: DataConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float,
    label_smoothing: float,
    max_shift: int,
    warmup_epochs: int = 1,
    device: torch.device | None = None,
    extra_loss: ExtraLoss | None = None,
    extra_weight: float = 0.5,
    teacher_logits: torch.Tensor | None = None,
    kd_weight: float = 0.5,
    temperature: float = 3.0,
    epoch_stats: Callable[[nn.Module], dict[str, float]] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, float]]:
    """Train ``module`` in place on uint8 canvas ``images`` (N, C, H, W); returns one stats dict per epoch.

    ``max_shift`` is the augmentation (0: none). The warm-up lasts
    ``min(warmup_epochs, epochs)`` epochs, so short runs still reach the peak rate.
    ``extra_loss(x, logits)`` -- ``x`` the augmented canvas pixels of the batch on
    ``device``, ``logits`` the module's -- adds a term:
    ``loss = (1 - extra_weight) * CE + extra_weight * term`` (distillation).
    ``teacher_logits`` (N, classes), a teacher's logits on ``images`` computed
    beforehand (offline distillation; row i belongs to image i, whatever shift the
    image gets), adds Hinton's soft-target term at ``temperature`` T:
    ``loss = (1 - kd_weight) * CE + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))``;
    it cannot be combined with ``extra_loss``. Without either, nothing else changes.
    After each epoch the stats are epoch, loss (mean per sample) and
    train_accuracy, updated with ``epoch_stats(module)`` (called in train mode);
    then ``on_epoch(stats)`` and ``progress(epoch, epochs)`` are called.
    The module ends in eval mode and channels_last on ``device`` (default: where
    its parameters are). A non-finite loss raises :class:`ModelError` at the end of its
    epoch (the loop never waits for the device); before that, ``extra_loss.check()``
    runs if ``extra_loss`` has one.
    The caller seeds the global RNG (initialization, any dropout); the data order
    and the shifts come from a private generator (module docstring).
    """
    dev = device if device is not None else _device_of(module)
    x_all = as_float(images)
    y_all = labels.to(torch.int64)
    t_all = None
    if teacher_logits is not None:
        if extra_loss is not None:
            raise ModelError("fit takes either extra_loss or teacher_logits, not both")
        if teacher_logits.ndim != 2 or len(teacher_logits) != len(y_all):
            raise ModelError(f"teacher_logits must be (N, classes) for N = {len(y_all)} images; got {tuple(teacher_logits.shape)}")
        if not temperature > 0:
            raise ModelError(f"the distillation temperature must be positive, got {temperature}")
        t_all = teacher_logits.detach().float().cpu()
        if not bool(torch.isfinite(t_all).all()):
            raise ModelError("teacher_logits contain NaN/inf values; the teacher is broken")
    gen = torch.Generator().manual_seed(10_000 + seed)
    steps_per_epoch = math.ceil(len(y_all) / batch_size)
    total = epochs * steps_per_epoch
    # channels_last makes CPU max-pool and depthwise convs much faster (mkldnn kernels);
    # callers make the state_dict contiguous again.
    module.to(dev, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(warmup_epochs, epochs) * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, total=total, warmup=warmup))
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        # running sums stay on the device and are read once per epoch: reading them per step
        # (float(loss), a finiteness test) would sync a GPU with the host at every step
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = _upload(random_shift(x_all[idx], max_shift, gen), dev)
            y = _upload(y_all[idx], dev)
            out = module(preprocess(x, cfg).contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            if extra_loss is not None:
                term = extra_loss(x, out)
                loss = (1.0 - extra_weight) * loss + extra_weight * term
            elif t_all is not None:
                T = temperature
                t = _upload(t_all[idx], dev)
                kd = F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t / T, dim=1),
                              reduction="batchmean", log_target=True) * (T * T)
                loss = (1.0 - kd_weight) * loss + kd_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach().double() * len(idx)
            correct += (out.argmax(1) == y).sum()
            seen += len(idx)
        check = getattr(extra_loss, "check", None)
        if check is not None:
            check()  # the extra term's own errors name their cause (a teacher's NaN logits)
        total_loss = float(loss_sum)
        if not math.isfinite(total_loss):
            raise ModelError(f"training loss became {total_loss} at epoch {epoch + 1}; lower the learning rate (--lr)")
        stats: dict[str, float] = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": int(correct) / seen}
        if epoch_stats is not None:
            stats.update(epoch_stats(module))
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if progress is not None:
            progress(epoch + 1, epochs)
    module.eval()
    return history
