"""Random numbers for attacks that sample inside their loop, seeded per sample.

A counter-based generator: each value is an integer hash of (seed, sample id,
stream, element index), computed with tensor ops on the attack's device. So the
numbers of sample ``i`` are the same whatever batch it is in, whichever shard
attacks it and on whichever device (integer ops are exact on CPU and CUDA), and
drawing them needs no host round trip.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for 0 <= x < 2**32, without int64 overflow (16-bit halves)."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class SampleNoise:
    """Per-sample uniform noise for one batch: ``ids`` are the samples' ids (any device)."""

    def __init__(self, ids: torch.Tensor, seed: int, device: torch.device | str | None = None):
        ids = ids.to(device=device if device is not None else ids.device, dtype=torch.int64)
        s = torch.tensor(int(seed) & _M32, dtype=torch.int64, device=ids.device)
        key = _mix32(_mix32(s ^ 0x5BD1E995) ^ (ids & _M32))
        self._key = _mix32(key ^ ((ids >> 32) & _M32))  # (B,)
        self.device = ids.device

    def uniform(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """U(-1, 1) float32 noise of shape ``(len(ids), *shape)``; ``stream`` tells draws apart (e.g. step * K + k)."""
        n = 1
        for d in shape:
            n *= int(d)
        idx = torch.arange(n, dtype=torch.int64, device=self.device)
        k = _mix32(self._key ^ (int(stream) * 0x9E3779B1 & _M32)).view(-1, 1)
        h = _mix32(_mix32(idx.view(1, -1) ^ k) ^ 0x68E31DA4)
        u = (h >> 8).to(torch.float32) * (1.0 / 2**24)  # 24 bits: exact in float32, in [0, 1)
        return (u * 2 - 1).view(len(self._key), *shape)
