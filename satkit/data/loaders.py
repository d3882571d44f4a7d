"""Resolve a ``--data`` value to a CleanSet.

- ``digits`` (held-out test split), ``digits:train``, ``digits:all``: scikit-learn's
  8x8 digits, shipped with scikit-learn, upsampled once to the canvas (default 16 px).
- a directory: one sub-folder per class (ImageNet val layout); sorted folder names
  are the class indices; images are decoded, resized (shorter side to
  canvas / crop_pct, bicubic, antialiased) and center-cropped once to the canvas.
- a directory of images with a labels file (``labels=``, CLI ``--labels``): ImageNet val
  as distributed (a flat folder of ``ILSVRC2012_val_*.JPEG`` and Kaggle's
  ``LOC_val_solution.csv``, or a ``filename,label`` file); synset ids become the
  indices of the 1,000 sorted ImageNet-1k synsets, timm's class order.
- a ``.safetensors`` file: a data file (``images`` + ``labels`` [+ ``ids``], with satkit
  metadata or a plain file saved with ``safetensors.torch.save_file``), or a satkit
  attack/logits file, whose clean set is reused exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from satkit.data.base import CleanSet, stratified_sample
from satkit.data.stream import FolderImages, open_flat_folder, open_folder
from satkit.errors import DataError, InputFileError, ParameterError
from satkit.limits import CANVAS, CHUNK, CHUNK_INDEX, N
from satkit.settings import DATA, DATA_SEED, DIGITS_EPS, NATURAL_EPS  # noqa: F401  (DIGITS_EPS: re-exported)

DIGITS_CANVAS = 16
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices (into sklearn's 1,797 digits) of the train and held-out test split; fixed forever."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return np.sort(tr), np.sort(te)


def load_digits_set(split: str = "test", canvas: int | None = None, n: int | None = None, seed: int = 0,
                    chunk: tuple[int, int] | None = None) -> CleanSet:
    from sklearn.datasets import load_digits

    canvas = canvas or DIGITS_CANVAS
    d = load_digits()
    tr, te = digits_split()
    sel = {"test": te, "train": tr, "all": np.arange(len(d.target))}.get(split)
    if sel is None:
        raise DataError(f"unknown digits split '{split}'; use digits, digits:train or digits:all")
    sub = stratified_sample(d.target[sel], n, seed, chunk)
    sel = sel[sub]
    x = torch.from_numpy(d.images[sel].astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    if canvas != 8:
        x = F.interpolate(x, size=(canvas, canvas), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return CleanSet(
        images=images,
        labels=torch.from_numpy(d.target[sel].astype(np.int64)),
        ids=torch.from_numpy(sel.astype(np.int64)),
        source="digits" if split == "test" else f"digits:{split}",
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        info={"kind": "digits", "split": split, "canvas": canvas, "n": n, "seed": seed, **_chunk_info(chunk)},
    )


def _chunk_info(chunk: tuple[int, int] | None) -> dict:
    # only when set: the provenance of every other file keeps its bytes
    return {"chunk": [int(chunk[0]), int(chunk[1])]} if chunk is not None else {}


def load_tensor_file(path: Path, n: int | None, seed: int, chunk: tuple[int, int] | None = None) -> CleanSet:
    from satkit.formats.files import read_satkit_file

    # a plain safetensors file (no satkit metadata) is read as a data file, and verified as one
    f = read_satkit_file(path, ("satkit.data", "satkit.attack", "satkit.logits"), plain="satkit.data")
    if f.format == "satkit.data":
        images, labels = f.get("images"), f.get("labels")
        ids = f.get("ids") if "ids" in f.keys else torch.arange(len(labels), dtype=torch.int64)
    else:
        images, labels, ids = f.get("clean"), f.get("labels"), f.get("ids")
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise DataError(f"{path}: images must be uint8 or float in [0, 1], got {images.dtype}")
        if images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1]")
        images = (images.float() * 255).round().to(torch.uint8)
    if images.ndim != 4 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{path}: expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: negative labels")
    stored = f.header.num_classes  # data, attack and logits headers all say it (or None: the labels decide)
    num_classes = int(stored if stored is not None else (int(labels.max()) + 1 if len(labels) else 0))
    sel = torch.from_numpy(stratified_sample(labels.numpy(), n, seed, chunk))
    return CleanSet(
        images=images[sel].contiguous(),
        labels=labels[sel].contiguous(),
        ids=ids.to(torch.int64)[sel].contiguous(),
        source=str(path),
        num_classes=num_classes,
        info={"kind": "file", "n": n, "seed": seed, **_chunk_info(chunk)},
    )


def open_data(spec: str, canvas: int | None = None, n: int | None = None, seed: int = 0,
              labels: str | None = None, chunk: tuple[int, int] | None = None) -> CleanSet | FolderImages:
    """Like :func:`load_data`, but an image folder comes back listed and sampled, not decoded.

    Decode it with ``.load()`` or, to decode while computing, ``with src.stream() as s:``
    (see :mod:`satkit.data.stream`). Either way the samples, pixels and fingerprint
    are those :func:`load_data` gives.
    """
    check_sizes(n, canvas, chunk)
    s = spec.strip()
    if labels is not None and (is_digits(s) or Path(os.path.expanduser(s)).is_file()):
        raise ParameterError(f"--labels {labels}: labels go with a flat image folder (--data DIR); '{spec}' is not a folder")
    if s == "digits" or s.startswith("digits:"):
        split = s.split(":", 1)[1] if ":" in s else "test"
        return load_digits_set(split, canvas, n, seed, chunk)
    p = Path(os.path.expanduser(s))
    if not p.exists():
        raise DataError(f"data source '{spec}' not found: give 'digits', an image folder or a .safetensors file")
    if p.is_dir():
        if labels is not None:
            return open_flat_folder(p, Path(os.path.expanduser(labels)), canvas, n, seed, chunk=chunk)
        return open_folder(p, canvas, n, seed, chunk=chunk)
    if p.suffix == ".safetensors":
        return load_tensor_file(p, n, seed, chunk)
    raise InputFileError(f"{p}: unsupported data file; use an image folder or a satkit .safetensors file")


def load_data(spec: str, canvas: int | None = None, n: int | None = None, seed: int = 0,
              labels: str | None = None, chunk: tuple[int, int] | None = None) -> CleanSet:
    """Resolve a ``--data`` value (and ``--labels`` for a flat folder; see module docstring)."""
    src = open_data(spec, canvas, n, seed, labels, chunk)
    return src.load() if isinstance(src, FolderImages) else src


# The one default budget per data source (satkit.settings), used by every command and the study.
IMAGENET_EPS = NATURAL_EPS


def is_digits(spec: str) -> bool:
    return spec.strip() == "digits" or spec.strip().startswith("digits:")


def check_sizes(n: int | None, canvas: int | None, chunk: tuple[int, int] | None) -> None:
    """``n``, ``canvas`` and ``chunk`` within their one range (:mod:`satkit.limits`), or a one-line ParameterError."""
    N.check_optional(n)
    CANVAS.check_optional(canvas)
    if chunk is not None:
        if not (isinstance(chunk, (tuple, list)) and len(chunk) == 2):
            raise ParameterError(f"chunk must be (index, size), got {chunk!r}")
        CHUNK_INDEX.check(chunk[0])
        CHUNK.check(chunk[1])


def default_eps(spec: str) -> float:
    """The L-infinity budget satkit uses on data source ``spec`` unless told otherwise."""
    return DIGITS_EPS if is_digits(spec) else IMAGENET_EPS


@dataclass(frozen=True)
class DataRequest:
    """A clean set as the user names it (``--data``, ``--n``, ``--data-seed``, ``--canvas``, ``--labels``); picklable."""

    source: str = DATA
    n: int | None = None
    seed: int = DATA_SEED
    canvas: int | None = None
    labels: str | None = None  # labels file of a flat image folder
    chunk: tuple[int, int] | None = None  # (k, m): the k-th m images of the nested stratified order (adaptive studies)

    def __post_init__(self) -> None:
        check_sizes(self.n, self.canvas, self.chunk)  # before any work: CLI, library and study.json alike

    def load(self) -> CleanSet:
        return load_data(self.source, canvas=self.canvas, n=self.n, seed=self.seed, labels=self.labels, chunk=self.chunk)

    def open(self) -> CleanSet | FolderImages:
        return open_data(self.source, canvas=self.canvas, n=self.n, seed=self.seed, labels=self.labels, chunk=self.chunk)

    def local_file(self) -> Path | None:
        """The input file of the request (an input that outputs must never replace): the data
        file, or a folder's labels file."""
        if self.labels is not None:
            return Path(os.path.expanduser(self.labels))
        p = Path(os.path.expanduser(self.source))
        return p if not is_digits(self.source) and p.is_file() else None

    def inputs(self) -> list[Path]:
        """Every input the request reads, for "an output is never an input"
        (:func:`satkit.io.atomic.check_outputs`): the data file, or the image folder
        (a directory stands for every file under it), and the labels file."""
        out = [Path(os.path.expanduser(self.labels))] if self.labels is not None else []
        if not is_digits(self.source):
            p = Path(os.path.expanduser(self.source.strip()))
            if p.exists():
                out.append(p)
        return out
