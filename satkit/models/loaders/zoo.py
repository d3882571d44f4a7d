"""``digits/<name>``: a built-in digits zoo model with the weights shipped in the package."""

from __future__ import annotations

from satkit.errors import ModelError
from satkit.io.tensorfile import file_sha256
from satkit.models.spec import ZOO_PREFIX, ModelOptions, short
from satkit.models.wrapper import ClassifierWrapper, LoadedModel


def load(spec: str, opts: ModelOptions) -> LoadedModel:
    from safetensors.torch import load_file

    from satkit.models import zoo

    name = spec.removeprefix(ZOO_PREFIX)
    if name not in zoo.ZOO_MODELS:
        raise ModelError(f"unknown zoo model '{spec}'; known: {', '.join(ZOO_PREFIX + n for n in zoo.ZOO_MODELS)}")
    module, cfg, _arch = zoo.build_zoo_module(name)
    path = zoo.find_weights(name)
    if path is None:
        raise ModelError(f"no trained weights for {spec}; run `satkit zoo train` (about 5 minutes on 2 CPU cores)")
    try:
        module.load_state_dict(load_file(str(path)), strict=True)
    except Exception as e:
        raise ModelError(f"{path}: weights do not fit {spec} ({short(e)}); rerun `satkit zoo train {name}`") from None
    return LoadedModel(
        name=spec, spec=spec, module=ClassifierWrapper(module, cfg), num_classes=10,
        weights_id="sha256:" + file_sha256(path)[:16], kind="zoo",
    )


def weights_id(spec: str, opts: ModelOptions) -> str | None:
    from satkit.models import zoo

    path = zoo.find_weights(spec.removeprefix(ZOO_PREFIX))
    return "sha256:" + file_sha256(path)[:16] if path else None
