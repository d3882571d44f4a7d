"""Image folders decoded in background threads while the caller computes.

:func:`open_folder` lists and samples a folder without decoding anything and
returns a :class:`FolderImages`. Its :meth:`FolderImages.stream` starts decoding
the chosen images, in order, in background threads (PIL releases the GIL while it
decodes and resizes) into one preallocated uint8 tensor, and an
:class:`ImageStream` hands out batches as soon as they are decoded. The sha256
fingerprint is computed in order in a background thread as well, over exactly the
bytes :func:`satkit.data.base.fingerprint_of` hashes, so a stream and the
:class:`CleanSet` that :func:`satkit.data.load_data` returns for the same folder
have the same samples, pixels, labels, ids, fingerprint and provenance.

A decode error surfaces, as the same one-line :class:`DataError` the eager loader
raises, when the batch holding the bad image is asked for; leaving the stream's
``with`` block (normally or by an exception) stops and joins its threads.
"""

from __future__ import annotations

import csv
import os
import re
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from satkit.data.base import CleanSet, Fingerprinter, stratified_sample
from satkit.errors import DataError

DEFAULT_FOLDER_CANVAS = 224
DEFAULT_CROP_PCT = 0.875
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class StreamClosed(RuntimeError):
    """Rows asked for after the stream was closed, before they were decoded."""


def _images_in(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))


def list_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files (sorted by class folder, then name), their class indices and the class names."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        if _images_in(root):
            raise DataError(f"{root}: images but no class sub-folders; for a flat folder of images (ImageNet val as "
                            "distributed) give their labels with --labels FILE (LOC_val_solution.csv or filename,label)")
        raise DataError(f"{root}: no class sub-folders; expected one sub-folder per class (ImageNet val layout)")
    files: list[Path] = []
    labels: list[int] = []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(ci)
    if not files:
        raise DataError(f"{root}: {len(classes)} class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files, np.asarray(labels, dtype=np.int64), classes


# ---------------------------------------------------------------- flat folder + labels file

_SYNSET = re.compile(r"n[0-9]{8}")
# Integer labels above this are refused before anything is sized by them. It is 45x the largest
# classifier heads in use (ImageNet-21k: 21,843); the model's class count is checked later
# (satkit.models.fit.check_fits) and bounds the labels of any one run further.
MAX_LABEL_CLASSES = 1_000_000


def imagenet_synsets() -> list[str]:
    """The 1,000 ImageNet-1k synset ids, sorted: index i is class i of timm's ImageNet models."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


@dataclass
class LabelsFile:
    """A labels file read: image name (as written, with or without extension) -> class index."""

    path: Path
    labels: dict[str, int]
    num_classes: int
    class_names: list[str]
    kind: str  # "synsets" (ImageNet synset ids) or "indices" (integer class indices)


def read_labels_file(path: Path) -> LabelsFile:
    """Read a labels file for a flat image folder; a one-line :class:`DataError` on anything wrong.

    Accepted, one image per line (a header line is skipped):

    - Kaggle's ``LOC_val_solution.csv``: ``ImageId,PredictionString`` where the prediction
      string starts with the synset id (``n01751748 64 80 371 363 ...``);
    - ``filename,label`` (CSV) or ``filename label`` (whitespace, e.g. Caffe's ``val.txt``)
      with an integer class index or a synset id as the label.

    Synset ids map to their index among the 1,000 sorted ImageNet-1k synsets, the class
    order of timm's ImageNet models (a file that names only some synsets still gets the
    full 1,000-class numbering).
    """
    if not path.is_file():
        raise DataError(f"labels file {path} not found" if not path.exists() else f"{path}: --labels must be a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the labels file ({' '.join(str(e).split())[:120]})") from None
    rows: list[tuple[int, str, str]] = []  # (line number, image name, first token of the label)
    first = True
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        cells = next(csv.reader([line])) if "," in line else line.split(None, 1)
        if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
            raise DataError(f"{path} line {lineno}: expected 'image,label' (two fields), got {line[:80]!r}")
        name, label = cells[0].strip(), cells[1].split()[0]
        header, first = first and not _SYNSET.fullmatch(label) and not _is_int(label), False
        if not header:  # the first line may name the columns (ImageId,PredictionString / filename,label)
            rows.append((lineno, name, label))
    if not rows:
        raise DataError(f"{path}: no labels in the file; expected lines 'image,label'")
    kinds = {"synsets" if _SYNSET.fullmatch(lab) else "indices" for _, _, lab in rows}
    if len(kinds) > 1:
        raise DataError(f"{path}: mixes synset ids and integer class indices; use one kind of label")
    kind = kinds.pop()
    labels: dict[str, int] = {}
    if kind == "synsets":
        synsets = imagenet_synsets()
        index = {s: i for i, s in enumerate(synsets)}
        class_names = synsets
    for lineno, name, lab in rows:
        if kind == "synsets":
            if lab not in index:
                raise DataError(f"{path} line {lineno}: unknown synset '{lab}' (not one of the 1,000 ImageNet-1k classes)")
            value = index[lab]
        else:
            if not _is_int(lab):
                raise DataError(f"{path} line {lineno}: label '{lab}' is neither a class index (integer >= 0) nor a synset id")
            # bounded before int() and before the class list, whose length is the largest label
            if len(lab.lstrip("0")) > len(str(MAX_LABEL_CLASSES)) or int(lab) >= MAX_LABEL_CLASSES:
                shown = lab if len(lab) <= 24 else lab[:20] + "..."
                raise DataError(f"{path} line {lineno}: class index {shown} is beyond the bound of {MAX_LABEL_CLASSES:,} "
                                f"classes (indices 0 to {MAX_LABEL_CLASSES - 1:,}); fix the label")
            value = int(lab)
        if name in labels:
            raise DataError(f"{path} line {lineno}: image '{name}' is labelled twice")
        labels[name] = value
    if kind == "indices":
        num_classes = max(labels.values()) + 1
        class_names = [str(i) for i in range(num_classes)]
    return LabelsFile(path=path, labels=labels, num_classes=len(class_names) if kind == "synsets" else num_classes,
                      class_names=class_names, kind=kind)


def _is_int(s: str) -> bool:
    return s.isascii() and s.isdigit()


def list_flat_folder(root: Path, labels_path: Path) -> tuple[list[Path], np.ndarray, LabelsFile]:
    """Images directly in ``root`` (sorted by name) and their class indices from the labels file.

    Every image needs a label and every label an image (a file names an image by its file
    name or its stem, as LOC_val_solution.csv does); anything else is a one-line DataError.
    """
    lf = read_labels_file(labels_path)
    files = _images_in(root)
    if not files:
        sub = any(p.is_dir() for p in root.iterdir())
        hint = "; it has sub-folders: for one sub-folder per class drop --labels" if sub else ""
        raise DataError(f"{root}: no images directly in the folder ({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise DataError(f"{root}: {by_stem[f.stem].name} and {f.name} share the name '{f.stem}'; a labels file cannot tell them apart")
        by_stem[f.stem] = f
    labels = np.empty(len(files), dtype=np.int64)
    used: set[str] = set()
    unlabelled: list[Path] = []
    for i, f in enumerate(files):
        key = f.name if f.name in lf.labels else f.stem if f.stem in lf.labels else None
        if key is None:
            unlabelled.append(f)
            continue
        labels[i] = lf.labels[key]
        used.add(key)
    if unlabelled:
        more = f" and {len(unlabelled) - 1} more" if len(unlabelled) > 1 else ""
        raise DataError(f"{unlabelled[0]}{more}: no label in {labels_path}; the labels file must name every image of the folder")
    missing = [k for k in lf.labels if k not in used]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{labels_path} names image '{missing[0]}'{more}, not in {root}; "
                        "give a labels file for exactly the images of the folder")
    return files, labels, lf


def open_flat_folder(root: Path, labels_path: Path, canvas: int | None, n: int | None, seed: int,
                     channels: int = 3, chunk: tuple[int, int] | None = None) -> FolderImages:
    """A flat folder with a labels file, listed and sampled like a class-folder tree (nothing is decoded yet)."""
    size = canvas or DEFAULT_FOLDER_CANVAS
    files, labels, lf = list_flat_folder(root, labels_path)
    sel = stratified_sample(labels, n, seed, chunk)
    return FolderImages(
        files=[files[i] for i in sel],
        labels=torch.from_numpy(labels[sel]),
        ids=torch.from_numpy(sel.astype(np.int64)),
        source=str(root),
        num_classes=lf.num_classes,
        class_names=lf.class_names,
        info={"kind": "folder", "canvas": size, "n": n, "seed": seed, "files": len(files), "labels": str(labels_path),
              **({"chunk": list(chunk)} if chunk is not None else {})},
        size=size,
        channels=channels,
    )


# Every image becomes 8 bits per channel (stored uint8, read as value / 255 in [0, 1]) by the
# rules below, so no mode is saturated or zeroed by a blind convert("RGB"); docs/formats.md lists them.
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
# Formats whose 32-bit mode "I" holds 16-bit samples: PGM/PPM (PIL scales any maxval above 255 to
# 65535) and PNG (16-bit grey opened as "I" by older Pillow). Elsewhere (32-bit TIFF, ...) "I" has
# no white level to scale by.
_SIXTEEN_BIT_AS_I = {"PNG", "PPM"}
_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
# Transparent pixels are composited over white: what an image viewer or a web page shows.
BACKGROUND = 255
# EXIF orientation (tag 0x0112) -> the transpose that shows the picture upright (PIL.ImageOps.exif_transpose's table).
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _pixel_limit_error(path: Path, pixels: int | None, limit: int) -> DataError:
    size = f" ({pixels:,} pixels)" if pixels is not None else ""
    return DataError(f"{path}: image too large{size}, over PIL's decompression-bomb limit of {limit:,} pixels; "
                     "downscale it (from Python, PIL.Image.MAX_IMAGE_PIXELS sets the limit)")


def _to_8bit(im: Any, path: Path, mode: str) -> Any:
    """``im`` as an 8-bit image of ``mode`` ("RGB" or "L"), each source mode read by its own rule."""
    from PIL import Image

    src = im.mode
    if src in _SIXTEEN_BIT or (src == "I" and im.format in _SIXTEEN_BIT_AS_I):
        a = np.asarray(im)
        if src == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 16-bit image (mode I) with values outside 0..65535; re-save it as an 8- or 16-bit image")
        a16 = a.astype(np.uint32)
        grey = Image.fromarray(((a16 + 128) // 257).astype(np.uint8), "L")  # round(v / 65535 * 255)
        key = im.info.get("transparency")
        if isinstance(key, int):  # a 16-bit grey value marked transparent (PNG tRNS)
            alpha = Image.fromarray(np.where(a16 == key, 0, 255).astype(np.uint8), "L")
            return _composite(Image.merge("LA", (grey, alpha)), mode)
        return grey if mode == "L" else grey.convert(mode)
    if src == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: float image (mode F) holds NaN or infinite values; remove or replace it")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: float image (mode F) with values from {lo:g} to {hi:g}; satkit reads float images "
                            "as intensities in [0, 1] and does not guess another scale: scale it to [0, 1] or save it as 8/16-bit")
        grey = Image.fromarray(np.floor(a * 255.0 + 0.5).astype(np.uint8), "L")
        return grey if mode == "L" else grey.convert(mode)
    if src == "I":
        raise DataError(f"{path}: 32-bit integer image (mode I, {im.format or 'unknown format'}) has no defined white level; "
                        "save it as an 8- or 16-bit image")
    if src in _ALPHA or "transparency" in im.info:
        try:
            rgba = im.convert("RGBA")  # applies a palette's or a colour key's transparency
        except ValueError:
            raise DataError(f"{path}: image mode {src} is not supported; save it as RGB, RGBA or grayscale") from None
        return _composite(rgba, mode)
    if src == mode:
        return im
    try:
        if src == "LAB" and mode == "L":
            return im.convert("RGB").convert("L")
        return im.convert(mode)
    except ValueError:
        raise DataError(f"{path}: image mode {src} is not supported; save it as RGB or grayscale") from None


def _composite(im: Any, mode: str) -> Any:
    """An image with alpha ("LA" or "RGBA") over the white BACKGROUND, as ``mode``."""
    from PIL import Image

    a = np.asarray(im, dtype=np.uint32)
    alpha, colour = a[..., -1:], a[..., :-1]
    out = (colour * alpha + BACKGROUND * (255 - alpha) + 127) // 255
    flat = Image.fromarray(out.astype(np.uint8).squeeze(-1) if out.shape[-1] == 1 else out.astype(np.uint8),
                           "L" if out.shape[-1] == 1 else "RGB")
    return flat if flat.mode == mode else flat.convert(mode)


def decode_resize_into(out: np.ndarray, path: Path, canvas: int, channels: int = 3, crop_pct: float = DEFAULT_CROP_PCT) -> None:
    """Decode one image into ``out`` (uint8, (C, canvas, canvas)): shorter side -> canvas/crop_pct, center crop.

    The image is first made 8-bit RGB (or L) by :func:`_to_8bit` and turned upright by
    its EXIF orientation. Bicubic (antialiased) resize of the fully decoded image. JPEG
    draft mode (DCT-domain downscaling) is deliberately not used: it changes the pixels.
    """
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as im:
            limit = Image.MAX_IMAGE_PIXELS
            # PIL only warns between limit and 2 * limit (and decodes); satkit refuses from the limit on
            if limit is not None and im.size[0] * im.size[1] > limit:
                raise _pixel_limit_error(path, im.size[0] * im.size[1], limit)
            orientation = im.getexif().get(0x0112, 1)
            im = _to_8bit(im, path, mode)
            if isinstance(orientation, int) and orientation in _ORIENTATION:
                im = im.transpose(getattr(Image.Transpose, _ORIENTATION[orientation]))
            w, h = im.size
            scale = (canvas / crop_pct) / min(w, h)
            nw, nh = max(canvas, round(w * scale)), max(canvas, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - canvas) // 2, (nh - canvas) // 2
            im = im.crop((left, top, left + canvas, top + canvas))
            arr = np.asarray(im, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning when a filter makes it an error
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise _pixel_limit_error(path, int(m.group(1)) if m else None, Image.MAX_IMAGE_PIXELS or 0) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({' '.join(str(e).split())[:120]}); remove or replace it") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    out[...] = arr.transpose(2, 0, 1)  # HWC -> CHW, one copy straight into the destination


def default_workers(busy_device: bool) -> int:
    """Decode threads: up to 4 next to a CPU attack (which keeps every core busy), up to 8 when the CPU is otherwise idle.

    Measured on 2 cores: while the main thread imports torch/timm and builds the
    model it holds the GIL most of the time, so one decode thread gets little
    done; two finish 500 ImageNet-sized images about when the model is ready.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4 if busy_device else 8, cpus))


@dataclass
class FolderImages:
    """An image folder listed and sampled but not decoded: the samples ``load_data`` would decode, in order."""

    files: list[Path]  # the chosen image files, in sample order
    labels: torch.Tensor  # int64 (N,)
    ids: torch.Tensor  # int64 (N,): positions in the whole sorted listing
    source: str
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    size: int = DEFAULT_FOLDER_CANVAS
    channels: int = 3

    def __len__(self) -> int:
        return len(self.files)

    @property
    def canvas(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.size

    def stream(self, *, workers: int | None = None, chunk: int = 16, fingerprint: bool = True) -> "ImageStream":
        """Start decoding in the background; use the result as a context manager."""
        return ImageStream(self, workers=workers, chunk=chunk, fingerprint=fingerprint)

    def load(self, *, workers: int | None = None) -> CleanSet:
        """Decode everything now (in parallel) and return the CleanSet."""
        with self.stream(workers=workers if workers is not None else default_workers(busy_device=False), fingerprint=False) as s:
            return s.clean_set()


def open_folder(root: Path, canvas: int | None, n: int | None, seed: int, channels: int = 3,
                chunk: tuple[int, int] | None = None) -> FolderImages:
    """List and sample ``root`` (nothing is decoded yet)."""
    size = canvas or DEFAULT_FOLDER_CANVAS
    files, labels, classes = list_folder(root)
    sel = stratified_sample(labels, n, seed, chunk)  # sample before decoding: only chosen images are read
    return FolderImages(
        files=[files[i] for i in sel],
        labels=torch.from_numpy(labels[sel]),
        ids=torch.from_numpy(sel.astype(np.int64)),
        source=str(root),
        num_classes=len(classes),
        class_names=classes,
        info={"kind": "folder", "canvas": size, "n": n, "seed": seed, "files": len(files),
              **({"chunk": list(chunk)} if chunk is not None else {})},
        size=size,
        channels=channels,
    )


class ImageStream:
    """Images of a :class:`FolderImages` decoded in order by background threads into ``images``.

    Work is split into chunks of ``chunk`` images (independent of the consumer's
    batch size), queued in order on ``workers`` threads; nothing bounds how far
    decoding runs ahead, since every image ends up in ``images`` (which the
    attack file stores) anyway. Has the attributes of a CleanSet that provenance reads (``source``, ``labels``,
    ``ids``, ``num_classes``, ``canvas``, ``info``, ``fingerprint``) and
    ``images``, whose rows are valid once :meth:`wait` returned for them.
    """

    def __init__(self, src: FolderImages, *, workers: int | None = None, chunk: int = 16, fingerprint: bool = True):
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        self.src = src
        self.source, self.labels, self.ids = src.source, src.labels, src.ids
        self.num_classes, self.class_names, self.info = src.num_classes, src.class_names, src.info
        n = len(src)
        self.images = torch.empty((n, *src.canvas), dtype=torch.uint8)
        self._pixels = self.images.numpy()  # the same memory, written by the decode threads
        self._bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        self._chunk = chunk
        self._fp = Fingerprinter(tuple(self.images.shape), self.images.dtype) if fingerprint else None
        self._stop = threading.Event()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=workers or default_workers(busy_device=True), thread_name_prefix="satkit-decode")
        self._decoded: list[Future] = [self._pool.submit(self._decode, s, e) for s, e in self._bounds]
        self._hasher: ThreadPoolExecutor | None = None
        self._hashed: list[Future] = []
        if self._fp is not None:  # one thread, FIFO: the chunks are hashed in order, each once it is decoded
            self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="satkit-hash")
            self._hashed = [self._hasher.submit(self._hash, j) for j in range(len(self._bounds))]

    # ---- background work -------------------------------------------------

    def _decode(self, start: int, stop: int) -> None:
        s = self.src
        for i in range(start, stop):
            if self._stop.is_set():
                raise StreamClosed("image stream closed before these images were decoded")
            decode_resize_into(self._pixels[i], s.files[i], s.size, s.channels)

    def _hash(self, j: int) -> None:
        self._decoded[j].result()  # raises the decode error (or CancelledError after close)
        s, e = self._bounds[j]
        assert self._fp is not None
        self._fp.update(self.images[s:e])

    # ---- consumer side -------------------------------------------------------

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def canvas(self) -> tuple[int, int, int]:
        return self.src.canvas

    def wait(self, start: int, stop: int) -> torch.Tensor:
        """Block until rows ``start:stop`` are decoded and return them (a view of ``images``).

        Raises the DataError of the first undecodable image among them, and
        :class:`StreamClosed` for rows the stream was closed before decoding.
        """
        if stop > start:
            for j in range(start // self._chunk, (stop - 1) // self._chunk + 1):
                try:
                    self._decoded[j].result()
                except CancelledError:
                    raise StreamClosed("image stream closed before these images were decoded") from None
        return self.images[start:stop]

    def batches(
        self, batch_size: int, prepare: Callable[[torch.Tensor], Any] | None = None
    ) -> Iterator[tuple[slice, torch.Tensor, Any]]:
        """Yield ``(slice, uint8 batch, prepared)`` in order.

        ``prepare(batch)`` (e.g. a float conversion into pinned memory for a GPU
        copy) runs in a background thread one batch ahead; without it ``prepared``
        is None.
        """
        n = len(self)
        slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        if prepare is None:
            for sl in slices:
                yield sl, self.wait(sl.start, sl.stop), None
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="satkit-prepare") as prep:
            ahead: Future | None = None

            def job(sl: slice) -> Any:
                return prepare(self.wait(sl.start, sl.stop))

            try:
                for k, sl in enumerate(slices):
                    fut = ahead if ahead is not None else prep.submit(job, sl)
                    ahead = prep.submit(job, slices[k + 1]) if k + 1 < len(slices) else None
                    yield sl, self.images[sl], fut.result()
            finally:
                if ahead is not None:
                    ahead.cancel()

    def wait_all(self) -> None:
        self.wait(0, len(self))

    @property
    def fingerprint(self) -> str:
        """The CleanSet fingerprint of the decoded images (waits for decoding and hashing to finish)."""
        self.wait_all()
        if self._fp is None:
            return self.clean_set().fingerprint
        for f in self._hashed:
            f.result()
        return self._fp.hexdigest(self.labels, self.ids)

    def clean_set(self) -> CleanSet:
        """Everything decoded, as a CleanSet (shares ``images``)."""
        self.wait_all()
        return CleanSet(
            images=self.images, labels=self.labels, ids=self.ids, source=self.source,
            num_classes=self.num_classes, class_names=self.class_names, info=self.info,
        )

    # ---- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Stop decoding and join the threads (idempotent). Decoded rows stay readable."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "ImageStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
