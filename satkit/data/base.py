"""The clean set every model in a study sees, and its seeded stratified sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from satkit.errors import ParameterError
from satkit.io.fingerprint import Fingerprinter, fingerprint_of  # noqa: F401  (re-exported: the fingerprint lives with the files)


@dataclass
class CleanSet:
    """Images decoded and resized once to the canvas, kept as uint8 (N, C, H, W)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    ids: torch.Tensor  # int64 (N,), stable for the data source
    source: str  # how the user named the data ("digits", a folder, a file)
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4
        assert self.labels.shape[0] == self.images.shape[0] == self.ids.shape[0]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def canvas(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def fingerprint(self) -> str:
        """sha256 over pixels, labels and ids: two files with the same fingerprint saw the same clean set."""
        return fingerprint_of(self.images, self.labels, self.ids)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of every index in which each prefix is class-stratified.

    Classes are shuffled within (seeded), and sample ``r`` of a class of size ``c``
    is placed at ``(r + 0.5) / c``: every prefix holds each class in proportion to
    its size (to within one sample), so the first m, then the next m, ... chunks of
    this order are nested stratified samples, and a longer run extends a shorter one.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        key[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    tie = rng.permutation(len(labels))  # classes at the same position come in a seeded order
    return np.lexsort((tie, key))


def chunk_rows(labels: np.ndarray, seed: int, chunk: tuple[int, int]) -> np.ndarray:
    """Indices (sorted) of chunk ``k`` of size ``m`` of :func:`stratified_order`: positions [k m, (k + 1) m)."""
    k, m = chunk
    if isinstance(k, bool) or isinstance(m, bool) or not (int(k) == k >= 0 and int(m) == m > 0):
        raise ParameterError(f"a chunk is (index >= 0, size > 0), got {chunk!r}")
    order = stratified_order(labels, seed)
    if k * m >= len(order):
        raise ParameterError(f"chunk {k} of {m} images starts past the {len(order)} images of the data")
    return np.sort(order[k * m:(k + 1) * m])


def stratified_sample(labels: np.ndarray, n: int | None, seed: int, chunk: tuple[int, int] | None = None) -> np.ndarray:
    """Indices of a class-stratified, seeded sample of size ``n`` (sorted).

    Each class gets ``n // C`` samples; the ``n % C`` remaining slots go to classes
    drawn at random (seeded) among those with samples left. With ``n=None`` or
    ``n >= len(labels)`` every index is returned. With n=5000 over ImageNet's
    1,000 classes this is 5 per class; the paper's 5,000 images are "a 10 %
    sample" of the validation set, and it does not say whether it stratified.
    """
    # checked even when nothing is sampled, so a bad seed never passes silently
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"--data-seed must be a whole number >= 0, got {seed!r}")
    if chunk is not None:  # an adaptive study's chunk (satkit.study.adaptive); --n caps the number of chunks there
        if n is not None:
            raise ParameterError("a chunk of the data and --n cannot be combined")
        return chunk_rows(labels, seed, chunk)
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    if n <= 0:
        raise ParameterError(f"--n must be positive, got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = n // len(classes)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    chosen: list[np.ndarray] = []
    left: dict[int, np.ndarray] = {}
    for c in classes:
        take = by_class[c][:per]
        chosen.append(take)
        left[c] = by_class[c][len(take):]
    remaining = n - sum(len(x) for x in chosen)
    # spread what is left (remainder, or classes smaller than `per`) one per class, seeded order
    while remaining > 0:
        candidates = [c for c in classes if len(left[c]) > 0]
        if not candidates:
            break
        order = rng.permutation(len(candidates))
        for i in order[:remaining]:
            c = candidates[i]
            chosen.append(left[c][:1])
            left[c] = left[c][1:]
            remaining -= 1
    return np.sort(np.concatenate(chosen))
