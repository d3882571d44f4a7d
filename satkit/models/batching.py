"""``--batch-size auto``: the batch size a model and device can take, found by trying.

- CUDA: the largest power of two whose real step (PGD: forward + gradient to the
  input; transfer: an inference forward) peaks below ``CUDA_MEMORY_FRACTION`` of
  the device's memory; a CUDA out-of-memory error ends the search. Memory, not
  speed, is what a GPU batch size trades.
- CPU / MPS: speed per image barely moves past a few dozen images, and running
  out of RAM cannot be caught, so the probe times one step at 8, 16, ... 128 and
  keeps the smallest batch within ``CPU_SPEED_TOLERANCE`` of the best images/s.

Never larger than the number of images. The chosen number is recorded in the
attack file's provenance like any other batch size.

Without ``--batch-size`` every command takes :func:`default_batch_size`: ``auto``
on CUDA (a fixed 128 leaves small models launch-bound there), 128 elsewhere.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from satkit.errors import ParameterError
from satkit.limits import BATCH_SIZE

CUDA_MEMORY_FRACTION = 0.85
CPU_SPEED_TOLERANCE = 0.10
CUDA_MAX = 4096
CPU_MAX = 128
FIXED_DEFAULT = 128


def default_batch_size(device: torch.device | str, *, fixed: bool = False) -> int | str:
    """The batch size of every command run without ``--batch-size``, on ``device``.

    ``auto`` on CUDA, ``FIXED_DEFAULT`` elsewhere (on CPU the probe's choice barely
    changes the speed, and a fixed number keeps CPU files identical from machine to
    machine). ``fixed``: a number on every device (shards must cut the data alike
    wherever they run).
    """
    return "auto" if torch.device(device).type == "cuda" and not fixed else FIXED_DEFAULT


def parse_batch_size(value: str | int) -> int | str:
    """``"auto"`` or a positive integer (the CLI's ``--batch-size``)."""
    if isinstance(value, int):
        v: int | str = value
    elif str(value).strip().lower() == "auto":
        return "auto"
    else:
        try:
            v = int(str(value).strip())
        except ValueError:
            raise ParameterError(f"--batch-size must be a positive integer or 'auto', got '{value}'") from None
    return BATCH_SIZE.check(v)


def powers_of_two(lo: int, hi: int) -> list[int]:
    out, b = [], lo
    while b <= hi:
        out.append(b)
        b *= 2
    return out


def largest_fitting(step: Callable[[int], int], candidates: list[int], budget: int) -> int:
    """Largest candidate whose ``step(b)`` (returning peak bytes) stays within ``budget``; OOM ends the search."""
    best = candidates[0]
    for b in candidates:
        try:
            peak = step(b)
        except torch.cuda.OutOfMemoryError:
            break
        if peak > budget:
            break
        best = b
    return best


def fastest_small(seconds: Callable[[int], float], candidates: list[int], tolerance: float = CPU_SPEED_TOLERANCE) -> int:
    """Smallest candidate within ``tolerance`` of the best images/s (one timed call each, after a warm-up)."""
    seconds(candidates[0])  # warm-up: first call pays allocation and kernel selection
    speed = {b: b / max(seconds(b), 1e-9) for b in candidates}
    best = max(speed.values())
    return min(b for b, s in speed.items() if s >= (1 - tolerance) * best)


def resolve_batch_size(value: int | str | None, model, sample: torch.Tensor, *, kind: str, n: int, amp: str = "off") -> int:
    """``value`` if it is a number, else the automatic choice for ``model`` on its device
    (None: :func:`default_batch_size` of that device).

    ``sample`` is one stored image (uint8 or float, (1, C, H, W)); ``kind`` is
    ``attack`` (forward + backward) or ``transfer`` (inference only); ``n`` the number of images.
    """
    if value is None:
        value = default_batch_size(model.device)
    if not isinstance(value, str):
        return int(value)
    if value != "auto":
        return int(parse_batch_size(value))
    from satkit.devices import model_numerics, resolve_amp
    from satkit.io.pixels import as_float

    net = model.module
    device = model.device
    amp_dtype = resolve_amp(amp, device)
    x1 = as_float(sample[:1]).to(device)
    y1 = torch.zeros(1, dtype=torch.int64, device=device)

    def run(b: int) -> None:
        x = x1.expand(b, *x1.shape[1:]).contiguous()
        # the kernels (and their workspaces) of the real run: the same numerics mode
        with model_numerics(device, amp), model.autocast(amp_dtype):
            if kind == "attack":
                x.requires_grad_(True)
                # the attack's loss (satkit.attacks.pgd.summed_ce, a layer up)
                loss = -torch.log_softmax(net(x).float(), dim=1).gather(1, y1.expand(b).view(-1, 1)).sum()
                torch.autograd.grad(loss, x)
            else:
                with torch.inference_mode():
                    net(x)

    if device.type == "cuda":
        def peak(b: int) -> int:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            run(b)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)

        total = torch.cuda.get_device_properties(device).total_memory
        cands = powers_of_two(1, max(1, min(CUDA_MAX, _ceil_pow2(n))))
        b = largest_fitting(peak, cands, int(CUDA_MEMORY_FRACTION * total))
        torch.cuda.empty_cache()
        return max(1, min(b, n))

    def seconds(b: int) -> float:
        t = time.perf_counter()
        run(b)
        if device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter() - t

    cands = powers_of_two(8, max(8, min(CPU_MAX, _ceil_pow2(n))))
    return max(1, min(fastest_small(seconds, cands), n))


def _ceil_pow2(n: int) -> int:
    b = 1
    while b < n:
        b *= 2
    return b

