"""timm names (``resnet50``, ``resnet50.a1_in1k``) and hub names (``hf-hub:timm/resnet18.a1_in1k``).

Weights come through :mod:`satkit.models.hub` (bounded waits, offline answers); the
data config is timm's own (``resolve_model_data_config``), overridden by the options.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import torch.nn as nn

from satkit.errors import ModelError
from satkit.models.hub import create_timm_model
from satkit.models.spec import HF_HUB_PREFIX, ModelOptions, short
from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel


def timm_data_config(model: nn.Module, opts: ModelOptions) -> DataConfig:
    import timm.data

    cfg = DataConfig.from_timm(timm.data.resolve_model_data_config(model))
    chans = opts.model_kwargs.get("in_chans")
    if isinstance(chans, int) and not isinstance(chans, bool) and chans >= 1 and chans != cfg.input_size[0]:
        # timm's data config keeps the pretrained RGB entries whatever in_chans the model was built
        # with: take the channel count from the model, and mean/std averaged over RGB for each channel
        cfg = DataConfig(input_size=(chans, *cfg.input_size[1:]), mean=per_channel(cfg.mean, chans),  # type: ignore[arg-type]
                         std=per_channel(cfg.std, chans), interpolation=cfg.interpolation)
    return override_cfg(cfg, opts)


def per_channel(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    return (sum(values) / len(values),) * chans


def wrap(model: nn.Module, cfg: DataConfig, name: str) -> ClassifierWrapper:
    try:
        return ClassifierWrapper(model, cfg)
    except ValueError as e:  # mean/std that do not fit the channel count (--mean/--std/--input-size)
        raise ModelError(f"{name}: {e}; give --mean and --std with one value per input channel") from None


def override_cfg(cfg: DataConfig, opts: ModelOptions) -> DataConfig:
    return DataConfig(
        input_size=tuple(opts.input_size) if opts.input_size else cfg.input_size,  # type: ignore[arg-type]
        mean=tuple(opts.mean) if opts.mean else cfg.mean,
        std=tuple(opts.std) if opts.std else cfg.std,
        interpolation=opts.interpolation or cfg.interpolation,
    )


def check_timm_name(name: str) -> None:
    import timm

    if name.startswith(HF_HUB_PREFIX):
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?", name.removeprefix(HF_HUB_PREFIX)):
            raise ModelError(f"'{name}': a hub name is hf-hub:ORG/REPO, e.g. hf-hub:timm/resnet18.a1_in1k")
        return
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        # closest names first (a typo like resnet5o must suggest resnet50), zoo models among them
        from satkit.models import zoo

        known = list(timm.list_models()) + [f"digits/{n}" for n in zoo.ZOO_MODELS]
        close = difflib.get_close_matches(arch, known, n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown model '{name}': not a timm architecture, zoo model (digits/...) or model file{hint}")


def load(name: str, opts: ModelOptions) -> LoadedModel:
    check_timm_name(name)
    hub = name.startswith(HF_HUB_PREFIX)
    if opts.model_kwargs and opts.pretrained:
        raise ModelError(
            f"--model-kwargs changes the architecture, and the pretrained weights of '{name}' fit its defaults: "
            f"pass weights made with these arguments as a file with --arch, or use --random-init"
        )
    kwargs: dict[str, Any] = {}
    if opts.num_classes:
        kwargs["num_classes"] = opts.num_classes
    kwargs.update(opts.model_kwargs)
    try:
        # every download (bounded) or the one-line answer happens in satkit.models.hub; a hub name
        # needs the hub (or its cache) even for random init: its config.json names the architecture
        model = create_timm_model(name, opts.pretrained, **kwargs)
    except TypeError as e:  # an argument the architecture does not take
        raise ModelError(f"cannot build timm model '{name}' with --model-kwargs {kwargs_text(opts.model_kwargs)} ({short(e)})") from None
    except RuntimeError as e:
        msg = str(e)
        if "pretrained" in msg.lower() and "tag" in msg.lower():
            raise ModelError(f"'{name}': unknown weights tag ({short(e)}); see timm.list_pretrained('{name.split('.')[0]}*')") from None
        raise ModelError(f"cannot build timm model '{name}' ({short(e)})") from None
    except ModelError:  # weights neither cached nor downloadable: the hub module's one line
        raise
    except Exception as e:
        raise ModelError(f"cannot build timm model '{name}' ({short(e)})") from None
    cfg = timm_data_config(model, opts)
    tag = getattr(model, "pretrained_cfg", {}).get("tag") if opts.pretrained else None
    arch = name.split(".", 1)[0]
    if hub:
        weights_id = name if opts.pretrained else "random-init"
    else:
        weights_id = f"timm:{arch}.{tag}" if tag else (f"timm:{name}" if opts.pretrained else "random-init")
    nc = int(getattr(model, "num_classes", 0) or 0)
    extra = {"model_kwargs": dict(opts.model_kwargs)} if opts.model_kwargs else {}
    return LoadedModel(name=name, spec=name, module=wrap(model, cfg, name), num_classes=nc, weights_id=weights_id,
                       kind="timm", extra=extra)


def kwargs_text(kwargs: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items())


def weights_id(spec: str, opts: ModelOptions) -> str | None:
    if not opts.pretrained:
        return "random-init"
    if spec.startswith(HF_HUB_PREFIX):
        return spec
    import timm.models

    cfg = timm.models.get_pretrained_cfg(spec)
    return f"timm:{spec.split('.', 1)[0]}.{cfg.tag}" if cfg is not None and cfg.tag else None
