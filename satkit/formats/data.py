"""``satkit.data``: a clean set stored as tensors (``--data FILE``).

Tensors: ``images`` (N, C, H, W; uint8, or float in [0, 1]), ``labels`` (N,) integers
>= 0, optionally ``ids`` (N,) unique. A safetensors file without satkit metadata
holding these is read as a data file with an empty provenance (``plain``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from satkit.errors import DataError
from satkit.formats import checks as C
from satkit.formats.fields import Fail, put, rest, section, whole
from satkit.io.tensorview import DictTensors, Tensors

FORMAT = "satkit.data"
TODO = "rewrite the data file"
# what a data file must hold, for the message about a plain safetensors file that does not
TENSORS_NOTE = "a data file holds 'images' (N, C, H, W; uint8, or float in [0, 1]), 'labels' (N,) and optionally 'ids' (N,)"


@dataclass(frozen=True)
class DataHeader:
    """The provenance of a data file: only the class count is read (flat, or nested under ``data``)."""

    flat_classes: int | None = None  # provenance["num_classes"] (the first layout)
    data: dict[str, Any] | None = None  # provenance["data"], when the file has one
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance", todo: str = TODO) -> DataHeader:
        fail = Fail(where, DataError, todo)
        if not isinstance(d, dict):
            raise fail.field("provenance")
        flat = whole(d, "num_classes", "num_classes", fail, 1) if "num_classes" in d else None
        data = None
        if "data" in d:
            data = section(d, "data", fail)
            if "num_classes" in data:
                whole(data, "num_classes", "data.num_classes", fail, 1)
        return cls(flat_classes=flat, data=data, extra=rest(d, ("num_classes", "data")))

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), num_classes=self.flat_classes, data=self.data)

    @property
    def num_classes(self) -> int | None:
        """The nested count if there is one, else the flat one, else None (labels decide)."""
        nested = self.data.get("num_classes") if self.data is not None else None
        return nested if nested is not None else self.flat_classes

    def verify(self, t: Tensors | Mapping[str, torch.Tensor], where: str, todo: str = TODO) -> None:
        """Images uint8 or finite float in [0, 1], (N, C, H, W); labels integers >= 0; unique ids."""
        if isinstance(t, Mapping):
            t = DictTensors(t)
        fail = Fail(where, DataError, todo)
        C.require(t, ("images", "labels"), fail)
        shape = t.shape("images")
        if len(shape) == 4 and shape[1] not in (1, 3, 4) and shape[3] in (1, 3, 4):
            raise fail(f"tensor 'images' has shape {list(shape)}, which looks like (N, H, W, C); "
                       "store (N, C, H, W), e.g. images.permute(0, 3, 1, 2).contiguous()")
        n = C.check_images(t, "images", None, fail)[0]
        C.expect_dtype(t, "labels", C.INT_DTYPES, fail)
        C.expect_rows(t, ("labels",), n, fail)
        C.check_labels(t.get("labels").to(torch.int64), self.num_classes, fail)
        if t.has("ids"):
            C.expect_dtype(t, "ids", C.INT_DTYPES, fail)
            C.expect_rows(t, ("ids",), n, fail)
            C.check_ids(t.get("ids").to(torch.int64), fail)
