"""Tensors of a safetensors file or of a dict, behind one small interface, for the format checks.

A check asks ``has``/``dtype``/``shape`` (from the header, nothing loaded), ``get`` (one
tensor) and ``rows`` (a row range, from one open memory map): the same checks run on a
file being read and on tensors in memory (shards joined before writing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from satkit.errors import InputFileError

# safetensors' dtype names as torch dtypes (header dtypes are read without loading tensors)
ST_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}


class Tensors(Protocol):
    def has(self, name: str) -> bool: ...
    def dtype(self, name: str) -> torch.dtype | str: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def get(self, name: str) -> torch.Tensor: ...
    def rows(self, name: str, a: int, b: int) -> torch.Tensor: ...


class DictTensors:
    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = tensors

    def has(self, name: str) -> bool:
        return name in self._t

    def dtype(self, name: str) -> torch.dtype | str:
        return self._t[name].dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._t[name].shape)

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]

    def rows(self, name: str, a: int, b: int) -> torch.Tensor:
        return self._t[name][a:b]


class FileTensors:
    """Header dtypes/shapes without loading; tensors and row ranges from one open memory map."""

    def __init__(self, path: Path, keys: list[str], sf: Any):
        self._path, self._keys, self._sf = path, keys, sf

    def has(self, name: str) -> bool:
        return name in self._keys

    def dtype(self, name: str) -> torch.dtype | str:
        raw = self._sf.get_slice(name).get_dtype()
        return ST_DTYPES.get(raw, raw)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._sf.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._read(lambda: self._sf.get_tensor(name), name)

    def rows(self, name: str, a: int, b: int) -> torch.Tensor:
        return self._read(lambda: self._sf.get_slice(name)[a:b], name)

    def _read(self, fn: Callable[[], torch.Tensor], name: str) -> torch.Tensor:
        try:
            return fn()
        except Exception as e:  # safetensors raises its own error types
            msg = " ".join(str(e).split())[:200]
            raise InputFileError(f"{self._path}: cannot read tensor '{name}' ({msg}); the file is damaged") from None


@contextmanager
def file_tensors(path: Path, keys: list[str]) -> Iterator[FileTensors]:
    from safetensors import safe_open

    try:
        sf = safe_open(str(path), framework="pt")
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise InputFileError(f"{path}: not a readable safetensors file ({msg}); it may be truncated") from None
    with sf:
        yield FileTensors(path, keys, sf)
