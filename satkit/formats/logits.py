"""``satkit.logits``: one model's clean logits on a clean set.

Tensors: ``logits`` float32 (N, classes), ``labels``/``ids`` int64 (N,), and optionally
``clean`` (the images, so the file also works as ``--data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from satkit.errors import InputFileError
from satkit.formats import checks as C
from satkit.formats.fields import Fail, put, rest, section, text, whole
from satkit.formats.sections import DataInfo, ModelInfo
from satkit.io.tensorview import DictTensors, Tensors

FORMAT = "satkit.logits"
TODO = "remake it with `satkit logits`"

_TOP = ("command", "versions", "model", "data", "amp", "numerics", "stats", "from_attack", "rerun")


@dataclass(frozen=True)
class LogitsHeader:
    """The provenance of a logits file, typed."""

    model: ModelInfo
    data: DataInfo
    command: str | None = None  # "logits"
    versions: dict[str, str] | None = None
    amp: str | None = None
    numerics: dict[str, Any] | None = None
    clean_accuracy: float | None = None  # provenance["stats"]["clean_accuracy"]
    from_attack: str | None = None  # attack_key of the attack file the logits were taken from (no model run)
    rerun: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stats_extra: dict[str, Any] | None = None  # other keys of ``stats``; None: no stats section

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance", todo: str = TODO) -> LogitsHeader:
        fail = Fail(where, InputFileError, todo)
        if not isinstance(d, dict):
            raise fail.field("provenance")
        model = section(d, "model", fail)
        text(model, "name", "model.name", fail)
        data = section(d, "data", fail)
        text(data, "fingerprint", "data.fingerprint", fail)
        if "num_classes" in data:
            whole(data, "num_classes", "data.num_classes", fail, 1)
        named = {k: d[k] for k in _TOP if k not in ("model", "data") and d.get(k) is not None}
        for k in ("versions", "numerics", "stats"):
            if k in named and not isinstance(named[k], dict):
                del named[k]
        stats = named.pop("stats", None)
        acc, stats_extra = None, None
        if stats is not None:
            acc = stats.get("clean_accuracy")
            stats_extra = rest(stats, ("clean_accuracy",) if acc is not None else ())
        return cls(model=ModelInfo.parse(model), data=DataInfo.parse(data), **named, clean_accuracy=acc,
                   stats_extra=stats_extra,
                   extra=rest(d, ("model", "data", *named, *(("stats",) if stats is not None else ()))))

    def to_dict(self) -> dict[str, Any]:
        stats = None
        if self.stats_extra is not None or self.clean_accuracy is not None:
            stats = put(dict(self.stats_extra or {}), clean_accuracy=self.clean_accuracy)
        return put(dict(self.extra), command=self.command, versions=self.versions, model=self.model.to_dict(),
                   data=self.data.to_dict(), amp=self.amp, numerics=self.numerics, stats=stats,
                   from_attack=self.from_attack, rerun=self.rerun)

    @property
    def num_classes(self) -> int | None:
        return self.data.num_classes

    def verify(self, t: Tensors | Mapping[str, torch.Tensor], where: str, todo: str = TODO) -> None:
        """Dtypes/shapes, finite logits, labels in range, unique ids, and the stored pixels if any."""
        if isinstance(t, Mapping):
            t = DictTensors(t)
        fail = Fail(where, InputFileError, todo)
        C.require(t, ("logits", "labels", "ids"), fail)
        C.expect_dtype(t, "logits", (torch.float32,), fail)
        for name in ("labels", "ids"):
            C.expect_dtype(t, name, (torch.int64,), fail)
        ls = t.shape("logits")
        if len(ls) != 2 or ls[0] < 1 or ls[1] < 1:
            raise fail(f"tensor 'logits' has shape {list(ls)}, expected (N, classes) with N, classes >= 1")
        n = ls[0]
        C.expect_rows(t, ("labels", "ids"), n, fail)
        logits = t.get("logits")
        if not bool(torch.isfinite(logits).all()):
            raise fail("tensor 'logits' holds NaN/inf values")
        C.check_ids(t.get("ids"), fail)
        classes = self.data.num_classes
        C.check_labels(t.get("labels"), ls[1] if classes is None else min(classes, ls[1]), fail)
        if t.has("clean"):
            C.check_images(t, "clean", n, fail)
