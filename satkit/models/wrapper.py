"""The one place preprocessing happens: pixels in [0, 1] at the canvas size in,
logits out. Resizing to the model's input size (with its interpolation) and its
mean/std normalization run inside ``forward`` so attack gradients flow through
them and no caller ever normalizes by hand."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from satkit.errors import ModelError
from satkit.io.pixels import pixels_on
from satkit.io.prefetch import ahead, pinned


@dataclass(frozen=True)
class DataConfig:
    """What a model expects: (C, H, W), interpolation, per-channel mean and std."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_timm(cls, cfg: dict[str, Any]) -> "DataConfig":
        return cls(
            input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=str(cfg.get("interpolation", "bilinear")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation}


_INTERP = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area", "lanczos": "bicubic", "random": "bilinear"}


class ClassifierWrapper(nn.Module):
    """Wrap a classifier so it takes canvas pixels in [0, 1]."""

    def __init__(self, model: nn.Module, cfg: DataConfig, channels_last: bool | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        # channels_last (NHWC) makes convolutions, pooling and depthwise layers faster on CPU
        # and on tensor-core GPUs; only for plain modules that have 2D convolutions.
        if channels_last is None:
            channels_last = _has_conv(model) and not isinstance(model, torch.jit.ScriptModule)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        c = cfg.input_size[0]
        mean = torch.tensor(cfg.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std = torch.tensor(cfg.std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean.shape[1] not in (1, c) or std.shape[1] not in (1, c):
            raise ValueError(f"mean/std have {mean.shape[1]} channels, model takes {c}")
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.mode = _INTERP.get(cfg.interpolation, "bilinear")
        self.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ClassifierWrapper":
        # Always eval: BN statistics and dropout must never change under an attack.
        self.training = False
        try:
            self.model.eval()
        except NotImplementedError:
            pass  # torch.export modules are fixed graphs, already in inference form
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = preprocess(x, self.cfg, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def _has_conv(model: nn.Module) -> bool:
    try:
        return any(isinstance(m, nn.Conv2d) for m in model.modules())
    except Exception:  # exotic modules (torch.export graphs) may not iterate cleanly
        return False


def preprocess(x: torch.Tensor, cfg: DataConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """Canvas pixels in [0, 1] -> the model's normalized input (differentiable).

    Also used by zoo training and distillation so that training and evaluation
    see exactly the same preprocessing.
    """
    c, h, w = cfg.input_size
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        else:
            raise ValueError(f"images have {x.shape[1]} channels, model takes {c}")
    if x.shape[-2:] != (h, w):
        mode = _INTERP.get(cfg.interpolation, "bilinear")
        kw: dict[str, Any] = {}
        if mode in ("bilinear", "bicubic"):
            kw = {"align_corners": False, "antialias": x.shape[-2] > h or x.shape[-1] > w}
        x = F.interpolate(x, size=(h, w), mode=mode, **kw)
    if mean is None:
        mean = _constant(cfg.mean, x.device)
    if std is None:
        std = _constant(cfg.std, x.device)
    return (x - mean.to(x.dtype)) / std.to(x.dtype)


_CONSTANTS: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}


def _constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``values`` as a (1, C, 1, 1) float32 tensor on ``device``, made once: building it from Python
    numbers on every call would copy them to the device, a host sync per training or attack step."""
    key = (tuple(values), device)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1).to(device)
    return t


@dataclass
class LoadedModel:
    """A resolved model spec: the wrapped module plus what provenance needs."""

    name: str  # display name used in tables and matrices
    spec: str  # what the user passed
    module: ClassifierWrapper
    num_classes: int
    weights_id: str  # timm weights tag, or sha256 of the weights file
    kind: str  # timm | zoo | safetensors | torchscript | export | pickle
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data_config(self) -> DataConfig:
        return self.module.cfg

    @property
    def device(self) -> torch.device:
        """Where the model runs (the wrapper's mean/std buffers move with it)."""
        return self.module.mean.device

    def autocast(self, amp_dtype: torch.dtype | None):
        """Autocast to ``amp_dtype`` on the model's device, or nothing (``None``: full precision)."""
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=amp_dtype)

    def predict_logits(
        self,
        images: torch.Tensor,
        batch_size: int,
        amp_dtype: torch.dtype | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """float32 CPU logits of stored images (uint8 or float, (N, C, H, W)), batched; NaN/inf is an error.

        Each batch is read (``images`` may be memory-mapped) and pinned one batch ahead in
        a background thread (:func:`satkit.io.prefetch.ahead`).
        """
        n = len(images)
        bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        return self.logits_of(ahead(lambda b: (*b, pinned(images[b[0]:b[1]], self.device)), bounds), n, amp_dtype, progress)

    def logits_of(
        self,
        batches: Iterable[tuple[int, int, torch.Tensor]],
        n: int,
        amp_dtype: torch.dtype | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """float32 CPU logits (n, classes) of ``(start, stop, stored images)`` batches covering rows 0..n.

        Batches are uploaded without blocking and converted on the device
        (:func:`satkit.io.pixels.pixels_on`: the CPU's values); the logits stay on the
        device until the end, so the loop never waits for the device. NaN/inf is a ModelError.
        """
        device = self.device
        out: torch.Tensor | None = None
        for start, stop, host in batches:
            with torch.inference_mode(), self.autocast(amp_dtype):
                logits = self.module(pixels_on(host, device)).float()
            if out is None:
                out = torch.empty((n, logits.shape[1]), dtype=torch.float32, device=device)
            out[start:stop] = logits
            if progress:
                progress(stop, n)
        if out is None:
            return torch.empty((0, self.num_classes), dtype=torch.float32)
        self.check_finite(out)
        return out.cpu()

    def check_finite(self, logits: torch.Tensor) -> None:
        if not torch.isfinite(logits).all():
            bad = int((~torch.isfinite(logits)).any(dim=1).sum())
            raise ModelError(f"model {self.name} produced NaN/inf logits on {bad} sample(s); check its weights and input scaling")

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "weights_id": self.weights_id,
            "num_classes": self.num_classes,
            "data_config": self.data_config.to_dict(),
            **self.extra,
        }
