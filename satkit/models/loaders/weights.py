"""A file of weights only (``.safetensors``, or a ``.pt``/``.pth``/``.bin`` state dict) with ``--arch``.

The architecture is a timm architecture or a zoo architecture (``digits/resnet``);
``.pt`` files are read with ``torch.load(weights_only=True)``, which runs no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from satkit.errors import ModelError
from satkit.io.tensorfile import file_sha256
from satkit.models.loaders.timm import check_timm_name, kwargs_text, override_cfg, timm_data_config, wrap
from satkit.models.spec import HF_HUB_PREFIX, ZOO_PREFIX, ModelOptions, model_display_name, short
from satkit.models.wrapper import DataConfig, LoadedModel


def load_safetensors(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    return load_weights(p, spec, opts, safetensors=True)


def load_state_dict(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    return load_weights(p, spec, opts, safetensors=False)


def infer_num_classes(model: nn.Module, sd: dict[str, torch.Tensor]) -> int | None:
    cls = getattr(model, "pretrained_cfg", {}).get("classifier") or getattr(model, "default_cfg", {}).get("classifier")
    names = [cls] if isinstance(cls, str) else list(cls or [])
    for n in names:
        w = sd.get(f"{n}.weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return None


def build_arch(arch: str, num_classes: int | None, model_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, DataConfig | None, str]:
    """(module, zoo data config or None for timm, kind) for --arch."""
    if arch.startswith(ZOO_PREFIX):
        if model_kwargs:
            raise ModelError(f"--model-kwargs: {arch} is a zoo architecture and takes no arguments; they are for timm architectures")
        from satkit.models import zoo

        module, cfg, _ = zoo.build_zoo_module(arch.removeprefix(ZOO_PREFIX))
        return module, cfg, "zoo-arch"
    import timm

    if arch.startswith(HF_HUB_PREFIX):
        raise ModelError(f"--arch {arch}: give the timm architecture the hub model is built on (e.g. resnet18), not a hub name")
    check_timm_name(arch)
    kw: dict[str, Any] = {"num_classes": num_classes} if num_classes else {}
    kw.update(model_kwargs or {})
    try:
        return timm.create_model(arch.split(".", 1)[0], pretrained=False, **kw), None, "timm-arch"
    except Exception as e:
        given = f" with --model-kwargs {kwargs_text(model_kwargs)}" if model_kwargs else ""
        raise ModelError(f"cannot build architecture '{arch}'{given} ({short(e)})") from None


def load_weights(p: Path, spec: str, opts: ModelOptions, safetensors: bool) -> LoadedModel:
    if not opts.arch:
        raise ModelError(f"{p} holds weights only; say which architecture with --arch (a timm name or digits/<arch>)")
    sd = read_state_dict(p, safetensors)
    kwargs = dict(opts.model_kwargs)
    model, cfg, kind = build_arch(opts.arch, opts.num_classes, kwargs)
    if cfg is None and "num_classes" not in kwargs:  # timm: rebuild with the head size stored in the file
        nc = opts.num_classes or infer_num_classes(model, sd)
        if nc and nc != getattr(model, "num_classes", nc):
            model, _, _ = build_arch(opts.arch, nc, kwargs)
    mismatch = state_dict_mismatch(model, sd)
    if mismatch:
        given = f" --model-kwargs {kwargs_text(kwargs)}" if kwargs else ""
        raise ModelError(f"{p}: state dict does not fit --arch {opts.arch}{given}: {mismatch}")
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:
        raise ModelError(f"{p}: state dict does not fit --arch {opts.arch} ({short(e)})") from None
    cfg = override_cfg(cfg, opts) if cfg is not None else timm_data_config(model, opts)
    nc = int(getattr(model, "num_classes", 0) or opts.num_classes or 0) or 10
    extra: dict[str, Any] = {"arch": opts.arch}
    if kwargs:
        extra["model_kwargs"] = kwargs
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=wrap(model, cfg, str(p)), num_classes=nc,
        weights_id="sha256:" + file_sha256(p)[:16], kind="safetensors" if safetensors else "state-dict",
        extra=extra,
    )


def state_dict_mismatch(model: nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
    """Why ``sd`` does not load into ``model``, as a complete clause naming the first key; None if it fits."""
    own = model.state_dict()
    for k, v in own.items():
        if k in sd and tuple(sd[k].shape) != tuple(v.shape):
            n = sum(1 for j, w in own.items() if j in sd and tuple(sd[j].shape) != tuple(w.shape))
            more = f" (and {n - 1} more key(s))" if n > 1 else ""
            hint = ""
            first_conv = next((j for j, w in own.items() if w.ndim == 4), None)
            if k == first_conv and sd[k].shape[0] == v.shape[0] and sd[k].shape[1] != v.shape[1]:
                hint = f"; the weights take {sd[k].shape[1]} input channel(s): add --model-kwargs in_chans={sd[k].shape[1]}"
            else:
                hint = "; build the architecture as the weights were made: --model-kwargs NAME=VALUE,... (timm.create_model arguments)"
            return (f"'{k}' has shape {list(sd[k].shape)} in the file but {list(v.shape)} in the model{more}{hint}")
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) of the model are not in the file (first: '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} key(s) of the file are not in the model (first: '{unexpected[0]}')")
        return " and ".join(parts) + "; check --arch and --model-kwargs"
    return None


def read_state_dict(p: Path, safetensors: bool) -> dict[str, torch.Tensor]:
    try:
        if safetensors:
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{p}: cannot read weights ({short(e)})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}
