"""Resolve a model spec to a :class:`LoadedModel`.

Spec forms (first match wins):

- ``digits/<name>``: a built-in digits zoo model (``satkit zoo list``).
- a path ending in ``.safetensors``: a state dict; needs ``arch`` (a timm
  architecture or a zoo architecture such as ``digits/resnet``).
- a path ending in ``.pt2``: a ``torch.export`` program of pure tensor operators
  holding raw tensors only (see :mod:`satkit.models.untrusted`); anything else in
  one needs ``allow_code=True``.
- a path ending in ``.pt``/``.pth``/``.ts``: with ``arch``, a plain state dict
  loaded with ``weights_only=True``; TorchScript or a pickled full model only
  with ``allow_code=True`` (both are programs: loading or running them runs code
  from the file).
- ``hf-hub:<org>/<repo>``: a timm model on the Hugging Face hub (``hf-hub:timm/resnet18.a1_in1k``),
  its config and weights from the local Hugging Face cache or the hub.
- anything else: a timm name with optional weights tag (``resnet50.a1_in1k``),
  pretrained weights by default.

``model_kwargs`` (CLI ``--model-kwargs``) are passed to ``timm.create_model``, so weights of
a timm model built with non-default arguments (``in_chans=1``, ``num_classes=10``) load.

Models whose preprocessing timm cannot tell (TorchScript, export, pickles) take
``[0, 1]`` pixels at the canvas size unless mean/std/input size are given.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from satkit.errors import ModelError
from satkit.io.cells import check_model_name
from satkit.io.tensorfile import file_sha256
from satkit.models.hub import create_timm_model
from satkit.models.untrusted import check_pt2_archive, no_code_from_files
from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel

ZOO_PREFIX = "digits/"


@dataclass
class ModelOptions:
    """Options that change how a spec is resolved (CLI: --arch, --allow-code-execution, ...)."""

    arch: str | None = None
    allow_code: bool = False  # run code a model file carries (pickles, TorchScript, unchecked .pt2)
    pretrained: bool = True
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None
    interpolation: str | None = None
    name: str | None = None  # display name override
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments


HF_HUB_PREFIX = "hf-hub:"


def model_display_name(spec: str, opts: ModelOptions | None = None) -> str:
    """The name a model gets in tables: the zoo/timm name, or a file's stem.

    A name a spreadsheet would run as a formula (``=1+1.pt2``) is refused here, where
    names are made (:mod:`satkit.io.cells`).
    """
    return check_model_name(_display_name(spec, opts), from_option=bool(opts and opts.name))


def _display_name(spec: str, opts: ModelOptions | None) -> str:
    if opts and opts.name:
        return opts.name
    s = spec.strip()
    if s.startswith(ZOO_PREFIX):
        return s
    if _looks_like_path(s):
        return Path(s).stem
    return s


def expected_weights_id(spec: str, opts: ModelOptions | None = None) -> str | None:
    """The weights id :func:`load_model` would record, computed without building the model.

    Used to decide whether stored results are still valid. None when it cannot be
    told cheaply (then the caller loads the model).
    """
    opts = opts or ModelOptions()
    s = spec.strip()
    try:
        if s.startswith(ZOO_PREFIX) and not _looks_like_path(s.removeprefix(ZOO_PREFIX)):
            from satkit.models import zoo

            path = zoo.find_weights(s.removeprefix(ZOO_PREFIX))
            return "sha256:" + file_sha256(path)[:16] if path else None
        if _looks_like_path(s):
            p = Path(os.path.expanduser(s))
            return "sha256:" + file_sha256(p)[:16] if p.is_file() else None
        if not opts.pretrained:
            return "random-init"
        if s.startswith(HF_HUB_PREFIX):
            return s
        import timm.models

        cfg = timm.models.get_pretrained_cfg(s)
        return f"timm:{s.split('.', 1)[0]}.{cfg.tag}" if cfg is not None and cfg.tag else None
    except Exception:
        return None


def _looks_like_path(s: str) -> bool:
    if s.startswith(HF_HUB_PREFIX):  # hub names hold a "/" but name no file
        return False
    return s.endswith((".safetensors", ".pt", ".pt2", ".pth", ".ts", ".bin")) or os.sep in s or s.startswith(".")


def load_model(spec: str, opts: ModelOptions | None = None, device: torch.device | str = "cpu") -> LoadedModel:
    """Resolve ``spec`` (see module docstring) to an eval-mode, frozen, wrapped model on ``device``."""
    opts = opts or ModelOptions()
    s = spec.strip()
    if not s:
        raise ModelError("empty model spec; give a timm name, digits/<name>, or a model file")
    # Without allow_code nothing a loader does may unpickle code (see satkit.models.untrusted).
    guard = contextlib.nullcontext() if opts.allow_code else no_code_from_files(s)
    with guard, _quiet():  # loaders log their own tracebacks (torch.export's fallbacks); errors come as ModelError
        lm = _resolve(s, spec, opts)
    if opts.name:
        lm.name = check_model_name(opts.name, from_option=True)
    lm.module.to(device)
    return lm


def _resolve(s: str, spec: str, opts: ModelOptions) -> LoadedModel:
    if s.startswith(ZOO_PREFIX) and not _looks_like_path(s.removeprefix(ZOO_PREFIX)):
        lm = _load_zoo(s)
    elif _looks_like_path(s):
        p = Path(os.path.expanduser(s))
        if not p.exists():
            raise ModelError(f"model file {p} not found")
        if p.suffix == ".safetensors":
            lm = _load_state_dict_file(p, spec, opts, safetensors=True)
        elif p.suffix == ".pt2":
            lm = _load_export(p, spec, opts)
        else:
            lm = _load_torch_file(p, spec, opts)
    else:
        lm = _load_timm(s, opts)
    return lm


# --------------------------------------------------------------------------- zoo


def _load_zoo(spec: str) -> LoadedModel:
    from satkit.models import zoo
    from safetensors.torch import load_file

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
        raise ModelError(f"{path}: weights do not fit {spec} ({_short(e)}); rerun `satkit zoo train {name}`") from None
    return LoadedModel(
        name=spec, spec=spec, module=ClassifierWrapper(module, cfg), num_classes=10,
        weights_id="sha256:" + file_sha256(path)[:16], kind="zoo",
    )


# -------------------------------------------------------------------------- timm


def _timm_data_config(model: nn.Module, opts: ModelOptions) -> DataConfig:
    import timm.data

    cfg = DataConfig.from_timm(timm.data.resolve_model_data_config(model))
    chans = opts.model_kwargs.get("in_chans")
    if isinstance(chans, int) and not isinstance(chans, bool) and chans >= 1 and chans != cfg.input_size[0]:
        # timm's data config keeps the pretrained RGB entries whatever in_chans the model was built
        # with: take the channel count from the model, and mean/std averaged over RGB for each channel
        cfg = DataConfig(input_size=(chans, *cfg.input_size[1:]), mean=_per_channel(cfg.mean, chans),  # type: ignore[arg-type]
                         std=_per_channel(cfg.std, chans), interpolation=cfg.interpolation)
    return _override_cfg(cfg, opts)


def _per_channel(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    return (sum(values) / len(values),) * chans


def _wrap(model: nn.Module, cfg: DataConfig, name: str) -> ClassifierWrapper:
    try:
        return ClassifierWrapper(model, cfg)
    except ValueError as e:  # mean/std that do not fit the channel count (--mean/--std/--input-size)
        raise ModelError(f"{name}: {e}; give --mean and --std with one value per input channel") from None


def _override_cfg(cfg: DataConfig, opts: ModelOptions) -> DataConfig:
    return DataConfig(
        input_size=tuple(opts.input_size) if opts.input_size else cfg.input_size,  # type: ignore[arg-type]
        mean=tuple(opts.mean) if opts.mean else cfg.mean,
        std=tuple(opts.std) if opts.std else cfg.std,
        interpolation=opts.interpolation or cfg.interpolation,
    )


def _check_timm_name(name: str) -> None:
    import timm

    if name.startswith(HF_HUB_PREFIX):
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?", name.removeprefix(HF_HUB_PREFIX)):
            raise ModelError(f"'{name}': a hub name is hf-hub:ORG/REPO, e.g. hf-hub:timm/resnet18.a1_in1k")
        return
    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:5] if len(arch) >= 3 else []
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown model '{name}': not a timm architecture, zoo model (digits/...) or model file{hint}")


def _load_timm(name: str, opts: ModelOptions) -> LoadedModel:
    import timm

    _check_timm_name(name)
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
        with _quiet():
            model = create_timm_model(name, opts.pretrained, **kwargs)
    except TypeError as e:  # an argument the architecture does not take
        raise ModelError(f"cannot build timm model '{name}' with --model-kwargs {_kwargs_text(opts.model_kwargs)} ({_short(e)})") from None
    except RuntimeError as e:
        msg = str(e)
        if "pretrained" in msg.lower() and "tag" in msg.lower():
            raise ModelError(f"'{name}': unknown weights tag ({_short(e)}); see timm.list_pretrained('{name.split('.')[0]}*')") from None
        raise ModelError(f"cannot build timm model '{name}' ({_short(e)})") from None
    except ModelError:  # weights neither cached nor downloadable: the hub module's one line
        raise
    except Exception as e:
        raise ModelError(f"cannot build timm model '{name}' ({_short(e)})") from None
    cfg = _timm_data_config(model, opts)
    tag = getattr(model, "pretrained_cfg", {}).get("tag") if opts.pretrained else None
    arch = name.split(".", 1)[0]
    if hub:
        weights_id = name if opts.pretrained else "random-init"
    else:
        weights_id = f"timm:{arch}.{tag}" if tag else (f"timm:{name}" if opts.pretrained else "random-init")
    nc = int(getattr(model, "num_classes", 0) or 0)
    extra = {"model_kwargs": dict(opts.model_kwargs)} if opts.model_kwargs else {}
    return LoadedModel(name=name, spec=name, module=_wrap(model, cfg, name), num_classes=nc, weights_id=weights_id,
                       kind="timm", extra=extra)


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items())


@contextlib.contextmanager
def _quiet():
    # timm/hf-hub log and warn on their own; keep the library silent.
    import logging
    import warnings

    old = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(old)


# --------------------------------------------------------------- state dict files


def _infer_num_classes(model: nn.Module, sd: dict[str, torch.Tensor]) -> int | None:
    cls = getattr(model, "pretrained_cfg", {}).get("classifier") or getattr(model, "default_cfg", {}).get("classifier")
    names = [cls] if isinstance(cls, str) else list(cls or [])
    for n in names:
        w = sd.get(f"{n}.weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return None


def _build_arch(arch: str, num_classes: int | None, model_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, DataConfig | None, str]:
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
    _check_timm_name(arch)
    kw: dict[str, Any] = {"num_classes": num_classes} if num_classes else {}
    kw.update(model_kwargs or {})
    try:
        with _quiet():
            return timm.create_model(arch.split(".", 1)[0], pretrained=False, **kw), None, "timm-arch"
    except Exception as e:
        given = f" with --model-kwargs {_kwargs_text(model_kwargs)}" if model_kwargs else ""
        raise ModelError(f"cannot build architecture '{arch}'{given} ({_short(e)})") from None


def _load_state_dict_file(p: Path, spec: str, opts: ModelOptions, safetensors: bool) -> LoadedModel:
    if not opts.arch:
        raise ModelError(f"{p} holds weights only; say which architecture with --arch (a timm name or digits/<arch>)")
    sd = _read_state_dict(p, safetensors)
    kwargs = dict(opts.model_kwargs)
    model, cfg, kind = _build_arch(opts.arch, opts.num_classes, kwargs)
    if cfg is None and "num_classes" not in kwargs:  # timm: rebuild with the head size stored in the file
        nc = opts.num_classes or _infer_num_classes(model, sd)
        if nc and nc != getattr(model, "num_classes", nc):
            model, _, _ = _build_arch(opts.arch, nc, kwargs)
    mismatch = _state_dict_mismatch(model, sd)
    if mismatch:
        given = f" --model-kwargs {_kwargs_text(kwargs)}" if kwargs else ""
        raise ModelError(f"{p}: state dict does not fit --arch {opts.arch}{given}: {mismatch}")
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:
        raise ModelError(f"{p}: state dict does not fit --arch {opts.arch} ({_short(e)})") from None
    cfg = _override_cfg(cfg, opts) if cfg is not None else _timm_data_config(model, opts)
    nc = int(getattr(model, "num_classes", 0) or opts.num_classes or 0) or 10
    extra: dict[str, Any] = {"arch": opts.arch}
    if kwargs:
        extra["model_kwargs"] = kwargs
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=_wrap(model, cfg, str(p)), num_classes=nc,
        weights_id="sha256:" + file_sha256(p)[:16], kind="safetensors" if safetensors else "state-dict",
        extra=extra,
    )


def _state_dict_mismatch(model: nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
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


def _read_state_dict(p: Path, safetensors: bool) -> dict[str, torch.Tensor]:
    try:
        if safetensors:
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{p}: cannot read weights ({_short(e)})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


# --------------------------------------------------------- TorchScript / export / pickle


def _plain_cfg(opts: ModelOptions) -> DataConfig | None:
    if opts.input_size is None:
        return None  # decided at first use: the canvas size
    c = opts.input_size[0]
    return DataConfig(
        input_size=tuple(opts.input_size),  # type: ignore[arg-type]
        mean=tuple(opts.mean) if opts.mean else (0.0,) * c,
        std=tuple(opts.std) if opts.std else (1.0,) * c,
        interpolation=opts.interpolation or "bilinear",
    )


def _wrap_plain(model: nn.Module, opts: ModelOptions) -> ClassifierWrapper:
    cfg = _plain_cfg(opts)
    if cfg is None:
        # identity preprocessing at whatever canvas comes in: mean 0, std 1, no resize
        cfg = DataConfig(input_size=(0, 0, 0), mean=(0.0,), std=(1.0,))
        return _PassThroughWrapper(model, cfg, opts)
    return ClassifierWrapper(model, cfg)


class _PassThroughWrapper(ClassifierWrapper):
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


def _probe_num_classes(opts: ModelOptions) -> int:
    return int(opts.num_classes or 0)


def _load_torch_file(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    if opts.arch:
        return _load_state_dict_file(p, spec, opts, safetensors=False)
    is_script = False
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        # TorchScript archives carry code/ and constants.pkl; torch.save archives only data.pkl
        is_script = any(re.search(r"(^|/)code/", n) for n in names) or any(n.endswith("constants.pkl") for n in names)
    if not opts.allow_code:
        what = "a TorchScript program" if is_script else "a pickled model (not TorchScript, torch.export or safetensors)"
        raise ModelError(
            f"{p} is {what}, and loading it runs code from the file: export it with torch.export to a .pt2 "
            f"or save its state dict as .safetensors and pass --arch, or pass --allow-code-execution only if you trust it"
        )
    if is_script:
        try:
            with _quiet():
                model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise ModelError(f"{p}: cannot load TorchScript ({_short(e)})") from None
        kind = "torchscript"
    else:
        try:
            model = torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelError(f"{p}: cannot unpickle ({_short(e)})") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"{p}: unpickled a {type(model).__name__}, not a torch.nn.Module; for a state dict use --arch")
        kind = "pickle"
    model.eval()
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=_wrap_plain(model, opts),
        num_classes=_probe_num_classes(opts), weights_id="sha256:" + file_sha256(p)[:16], kind=kind,
    )


def _load_export(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    from satkit.models.export_check import check_graph_module, check_guards

    if not opts.allow_code:
        check_pt2_archive(p)  # before torch parses anything
    try:
        ep = torch.export.load(str(p))
    except Exception as e:
        raise ModelError(f"{p}: cannot load torch.export program ({_short(e)})") from None
    if not opts.allow_code:
        check_graph_module(ep.graph_module, str(p))  # before the first call
        check_guards(getattr(ep, "_guards_code", None), str(p))  # exec()d by ep.module()
    try:
        model = ep.module()
    except Exception as e:
        raise ModelError(f"{p}: cannot load torch.export program ({_short(e)})") from None
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=_wrap_plain(model, opts),
        num_classes=_probe_num_classes(opts), weights_id="sha256:" + file_sha256(p)[:16], kind="export",
    )


def _short(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s[:180] + ("..." if len(s) > 180 else "")


def ensure_num_classes(lm: LoadedModel, sample: torch.Tensor) -> int:
    """For file models with unknown head size, run one forward to learn it."""
    if lm.num_classes:
        return lm.num_classes
    with torch.inference_mode():
        out = lm.module(sample[:1])
    if out.ndim != 2:
        raise ModelError(f"{lm.name}: expected logits of shape (N, classes), got {tuple(out.shape)}")
    lm.num_classes = int(out.shape[1])
    return lm.num_classes



def prepare_model(lm: LoadedModel, *, compile: bool = False) -> LoadedModel:
    """Optional ``torch.compile`` of the wrapped module (``--compile``); weights and provenance are unchanged.

    Compilation happens on the first batch (tens of seconds for a ResNet on CPU,
    and again for a smaller last batch); it pays off on GPUs with long attacks.

    Each compiled model starts from empty compile caches (``torch.compiler.reset()``):
    dynamo keys its caches by code object, every wrapped model runs the same
    ``forward``, and after its recompile limit (8 graphs) it silently runs a function
    eagerly: without a reset a process would stop compiling after the 4th to 8th model.
    So a process compiles one model at a time; one compiled earlier recompiles if used again.
    """
    if compile:
        try:
            torch.compiler.reset()
            lm.module = torch.compile(lm.module)
        except Exception as e:  # no compiler backend on this platform
            raise ModelError(f"--compile: torch.compile is not available here ({' '.join(str(e).split())[:160]})") from None
    return lm
