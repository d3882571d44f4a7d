"""Sections that several formats share: the model a file was made with, and the clean set it holds.

Fields hold the values as stored (no coercion: a file read and written again keeps its
bytes). ``None`` means absent; a key the header does not name, or one stored as null,
travels in ``extra`` and is written back as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from satkit.formats.fields import put, rest


def _split(d: Mapping[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(named fields that hold a value, everything else incl. named fields stored as null)."""
    return {k: d[k] for k in names if d.get(k) is not None}, rest(d, tuple(k for k in names if d.get(k) is not None))


@dataclass(frozen=True)
class ModelInfo:
    """``provenance["model"]``: which classifier, with which weights and preprocessing."""

    name: str | None = None  # display name (spec, or spec + options)
    spec: str | None = None  # what the user passed (zoo name, timm name, file path)
    kind: str | None = None  # loader: zoo | timm | weights | export | ...
    weights_id: str | None = None  # weights tag or file hash; attack files always have one
    num_classes: int | None = None
    data_config: dict[str, Any] | None = None  # the model's own mean/std/size/interpolation
    extra: dict[str, Any] = field(default_factory=dict)  # arch, model_kwargs, ... (loader-specific)

    NAMES = ("name", "spec", "kind", "weights_id", "num_classes", "data_config")

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ModelInfo:
        named, extra = _split(d, cls.NAMES)
        return cls(**named, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), **{k: getattr(self, k) for k in self.NAMES})

    @property
    def arch(self) -> Any:
        return self.extra.get("arch")

    @property
    def model_kwargs(self) -> Any:
        return self.extra.get("model_kwargs")

    def same_weights(self, name: str, weights_id: str | None) -> bool:
        """Made by this model name with these weights."""
        return self.name == name and self.weights_id == weights_id


@dataclass(frozen=True)
class DataInfo:
    """``provenance["data"]``: the clean set (:func:`satkit.provenance.data_provenance` writes it)."""

    source: str | None = None  # --data as given
    fingerprint: str | None = None  # hash of the clean pixels, labels and ids
    n: int | None = None  # images in the whole set (a shard names the whole set too)
    num_classes: int | None = None
    canvas: list[int] | None = None  # stored image size [C, H, W] or [H, W]
    sampling: dict[str, Any] | None = None  # n, seed, split, chunk: how the set was drawn
    labels: str | None = None  # --labels file; absent when not given (older files keep their bytes)
    extra: dict[str, Any] = field(default_factory=dict)

    NAMES = ("source", "fingerprint", "n", "num_classes", "canvas", "sampling", "labels")

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> DataInfo:
        named, extra = _split(d, cls.NAMES)
        return cls(**named, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), **{k: getattr(self, k) for k in self.NAMES})

    @property
    def chunk(self) -> Any:
        """The adaptive-study chunk the set was drawn for, or None."""
        return self.sampling.get("chunk") if isinstance(self.sampling, dict) else None


def opaque(d: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A section no check reads (versions, numerics): a JSON object, or absent."""
    v = d.get(key)
    return dict(v) if isinstance(v, dict) else None
