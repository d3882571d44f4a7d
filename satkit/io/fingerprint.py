"""The clean-set fingerprint: a digest of a clean set's pixels, labels and ids.

Data sources compute it when they load a clean set and files record it; the
verifier recomputes it from a file's stored pixels, so it lives with the files.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def fingerprint_of(images: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> str:
    """sha256 over pixels, labels and ids: two files with the same fingerprint saw the same clean set."""
    fp = Fingerprinter(tuple(images.shape), images.dtype)
    fp.update(images)
    return fp.hexdigest(labels, ids)


class Fingerprinter:
    """:func:`fingerprint_of` computed incrementally: images fed in row order, in any number of pieces.

    sha256 over repr(shape), dtype, the image bytes (C order), then the int64
    labels and ids: feeding ``images[a:b]`` pieces that cover all rows in order
    gives the same digest as hashing the whole tensor at once.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype):
        self._h = hashlib.sha256()
        self._h.update(repr(tuple(int(d) for d in shape)).encode())
        self._h.update(str(dtype).encode())

    def update(self, images: torch.Tensor) -> None:
        # hashlib reads the buffer directly (no bytes copy) and releases the GIL on large updates
        self._h.update(images.contiguous().numpy().reshape(-1).view(np.uint8))

    def hexdigest(self, labels: torch.Tensor, ids: torch.Tensor) -> str:
        h = self._h.copy()
        h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
        h.update(ids.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()[:32]
