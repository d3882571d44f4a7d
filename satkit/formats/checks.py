"""Tensor checks the formats share: presence, dtypes, shapes, ids, labels, flags, pixel ranges.

Each takes a :class:`satkit.io.tensorview.Tensors` and a :class:`Fail` and raises the
file's one-line error on the first defect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from satkit.formats.fields import Fail
from satkit.io.tensorview import Tensors

# Rows of clean/adv pixels read per step: bounds the verifier's memory on ImageNet-sized files.
CHUNK_BYTES = 32 << 20
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def dtype_name(dt: torch.dtype | str) -> str:
    return str(dt).replace("torch.", "")


def require(t: Tensors, names: tuple[str, ...], fail: Fail) -> None:
    for name in names:
        if not t.has(name):
            raise fail(f"tensor '{name}' is missing; the file is incomplete")


def expect_dtype(t: Tensors, name: str, want: tuple[torch.dtype, ...], fail: Fail) -> torch.dtype:
    dt = t.dtype(name)
    if dt not in want:
        raise fail(f"tensor '{name}' is {dtype_name(dt)}, expected {' or '.join(dtype_name(w) for w in want)}")
    return dt  # type: ignore[return-value]


def expect_rows(t: Tensors, names: tuple[str, ...], n: int, fail: Fail) -> None:
    """Each tensor is 1-D with ``n`` rows."""
    for name in names:
        shape = t.shape(name)
        if len(shape) != 1:
            raise fail(f"tensor '{name}' has shape {list(shape)}, expected ({n},)")
        if shape[0] != n:
            raise fail(f"tensor '{name}' has {shape[0]} rows but the images have {n}")


def images_shape(t: Tensors, name: str, fail: Fail) -> tuple[int, ...]:
    shape = t.shape(name)
    if len(shape) != 4:
        raise fail(f"tensor '{name}' has shape {list(shape)}, expected (N, C, H, W)")
    if shape[0] < 1:
        raise fail(f"tensor '{name}' holds no images")
    return shape


def check_ids(ids: torch.Tensor, fail: Fail) -> None:
    uniq, counts = torch.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        raise fail(f"ids are not unique (id {int(uniq[counts > 1][0])} appears {int(counts.max())} times)")


def check_labels(labels: torch.Tensor, classes: int | None, fail: Fail) -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (classes is not None and hi >= classes):
        bad = lo if lo < 0 else hi
        rng = f"[0, {classes})" if classes is not None else ">= 0"
        raise fail(f"labels must lie in {rng}, found {bad}")


def check_bool(t: Tensors, name: str, fail: Fail) -> torch.Tensor:
    expect_dtype(t, name, (torch.bool,), fail)
    v = t.get(name)
    # a bool tensor's bytes are read as they are: a byte 2 would act as True in some ops and not in others
    if len(v) and int(v.view(torch.uint8).max()) > 1:
        raise fail(f"tensor '{name}' holds values other than 0 and 1")
    return v


def in_unit_range(x: torch.Tensor) -> bool:
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(lo >= 0) and bool(hi <= 1)  # aminmax propagates NaN, which fails both comparisons


def chunks(n: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def row_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()


def check_float_images(t: Tensors, name: str, shape: tuple[int, ...], dtype: torch.dtype, fail: Fail) -> None:
    for a, b in chunks(shape[0], row_bytes(shape, dtype)):
        if not in_unit_range(t.rows(name, a, b)):
            raise fail(f"tensor '{name}' has pixels that are NaN/inf or outside [0, 1]")


def check_images(t: Tensors, name: str, n: int | None, fail: Fail) -> tuple[int, ...]:
    """Images uint8, or float finite in [0, 1]; (N, C, H, W) with ``n`` rows when given."""
    dt = t.dtype(name)
    if dt != torch.uint8 and not (isinstance(dt, torch.dtype) and dt.is_floating_point):
        raise fail(f"tensor '{name}' is {dtype_name(dt)}, expected uint8 or float pixels in [0, 1]")
    shape = images_shape(t, name, fail)
    if n is not None and shape[0] != n:
        raise fail(f"tensor '{name}' has {shape[0]} rows but the labels have {n}")
    if dt != torch.uint8:
        check_float_images(t, name, shape, dt, fail)  # type: ignore[arg-type]
    return shape
