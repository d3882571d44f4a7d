"""The wrapper of models that carry no data config (``.pt2``, TorchScript, pickles).

They take ``[0, 1]`` pixels at the canvas size unless ``--mean/--std/--input-size`` say otherwise.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from satkit.models.spec import ModelOptions
from satkit.models.wrapper import ClassifierWrapper, DataConfig


def plain_cfg(opts: ModelOptions) -> DataConfig | None:
    if opts.input_size is None:
        return None  # decided at first use: the canvas size
    c = opts.input_size[0]
    return DataConfig(
        input_size=tuple(opts.input_size),  # type: ignore[arg-type]
        mean=tuple(opts.mean) if opts.mean else (0.0,) * c,
        std=tuple(opts.std) if opts.std else (1.0,) * c,
        interpolation=opts.interpolation or "bilinear",
    )


def wrap_plain(model: nn.Module, opts: ModelOptions) -> ClassifierWrapper:
    cfg = plain_cfg(opts)
    if cfg is None:
        # identity preprocessing at whatever canvas comes in: mean 0, std 1, no resize
        cfg = DataConfig(input_size=(0, 0, 0), mean=(0.0,), std=(1.0,))
        return PassThroughWrapper(model, cfg, opts)
    return ClassifierWrapper(model, cfg)


class PassThroughWrapper(ClassifierWrapper):
    """A wrapper whose model takes canvas pixels in [0, 1] unchanged (optionally normalized)."""

    def __init__(self, model: nn.Module, cfg: DataConfig, opts: ModelOptions):
        super().__init__(model, cfg)
        self._opts = opts
        self._normalize = bool(opts.mean or opts.std)
        # buffers move with the module: a forward never builds a tensor from Python numbers (a host sync on a GPU)
        self.register_buffer("_mean", torch.tensor(opts.mean or (0.0,), dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(opts.std or (1.0,), dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._normalize:
            x = (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)
        return self.model(x)


def probe_num_classes(opts: ModelOptions) -> int:
    return int(opts.num_classes or 0)
