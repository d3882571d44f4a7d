"""Refuse a model that does not fit the data before any work is done.

One small forward on a few clean images tells whether a model can run on the data
at all (channels, image size, any batch size), returns finite ``(N, classes)``
logits, and has as many classes as the data. Without it, an ImageNet model given
the default digits set would "attack" digits with 1000-way logits, and a
fixed-batch export would fail halfway through a long run.
"""

from __future__ import annotations

import re

import torch

from satkit.errors import DataError, ModelError
from satkit.io.pixels import as_float
from satkit.models.wrapper import LoadedModel

# A 1000-way head is ImageNet-1k in practice (timm's default head).
_IMAGENET_CLASSES = 1000


def check_fits(lm: LoadedModel, sample: torch.Tensor, num_classes: int, data_source: str) -> None:
    """Raise a one-line :class:`ModelError` unless ``lm`` runs on ``sample`` and fits the data.

    ``sample``: a few stored clean images, uint8 or float, ``(k, C, H, W)``;
    ``num_classes``: the data's class count; ``data_source``: its ``--data`` value
    (named in messages). Runs the model at two batch sizes (1 and 2) so a model
    made for one fixed batch size is caught. Sets ``lm.num_classes`` when the
    model did not know it (model files).
    """
    if sample.ndim != 4 or len(sample) == 0:
        raise DataError(f"the data ({data_source}) gave no images of shape (N, C, H, W) (got {tuple(sample.shape)}); check --data")
    x = as_float(sample[:2]).to(_device(lm))
    x1 = x[:1]
    x2 = x[:2] if len(x) == 2 else x1.repeat(2, 1, 1, 1)
    shape = "x".join(str(v) for v in x.shape[1:])
    out1, err1 = _forward(lm, x1)
    out2, err2 = _forward(lm, x2)
    if err1 is not None and err2 is not None:
        raise _diagnose(lm, x1, err1, data_source, shape)
    if err1 is not None or err2 is not None:
        ok, bad = (1, 2) if err2 is not None else (2, 1)
        raise _fixed_batch(lm, ok, bad, err2 if err2 is not None else err1)
    assert out1 is not None and out2 is not None
    for k, out in ((1, out1), (2, out2)):
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"{lm.name} returned a {type(out).__name__}, not a logits tensor; "
                f"satkit needs a classifier whose forward returns logits of shape (N, classes)"
            )
        if out.ndim != 2 or out.shape[0] != k:
            raise ModelError(
                f"{lm.name} returned output of shape {tuple(out.shape)} for {k} image(s) of shape {shape}; "
                f"satkit needs a classifier whose forward returns logits of shape (N, classes)"
            )
        finite = torch.isfinite(out)
        if not finite.all():
            bad_n = int((~finite).any(dim=1).sum())
            raise ModelError(
                f"model {lm.name} produced NaN/inf logits on {bad_n} of {k} sample(s) of {data_source}; "
                f"check its weights and input scaling (--mean/--std)"
            )
    classes = int(out1.shape[1])
    if lm.num_classes and lm.num_classes != classes:
        raise ModelError(
            f"{lm.name} returns {classes} logits per image but was loaded as a {lm.num_classes}-class model; "
            f"check that the weights fit the architecture (--arch)"
        )
    lm.num_classes = classes
    # Fewer data classes than the model's is a labelled subset (an image folder of some classes) and
    # stays allowed; more is impossible, and the built-in digits set fits only 10-class models.
    if classes < num_classes or (classes != num_classes and _is_digits(data_source)):
        raise ModelError(_class_mismatch(lm.name, classes, num_classes, data_source))


def _is_digits(source: str) -> bool:
    return source.strip() == "digits" or source.strip().startswith("digits:")


def _device(lm: LoadedModel) -> torch.device:
    for t in (*lm.module.buffers(), *lm.module.parameters()):
        return t.device
    return torch.device("cpu")


def _forward(lm: LoadedModel, x: torch.Tensor) -> tuple[object, Exception | None]:
    try:
        with torch.inference_mode():
            return lm.module(x), None
    except Exception as e:  # models fail in any exception type (RuntimeError, AssertionError from export guards, ...)
        return None, e


def _short(e: BaseException) -> str:
    """The error's own last line: TorchScript puts its whole serialized traceback before it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    s = lines[-1] if lines else type(e).__name__
    s = re.sub(r"^\w+(Error|Exception): ", "", s)
    return s[:180] + ("..." if len(s) > 180 else "")


# torch.export guards: "Guard failed: x.size()[1] == 1" (newer), "... shape[1] to be equal to 1" (older)
_GUARD = re.compile(r"size\(\)\[(\d)\] == (\d+)|shape\[(\d)\] to be equal to (\d+)")
# convolution: "expected input[2, 3, 16, 16] to have 1 channels, but got 3 channels instead"
_CONV_CHANNELS = re.compile(r"to have (\d+) channels, but got (\d+) channels")


def _guard(e: BaseException) -> tuple[int, int] | None:
    m = _GUARD.search(str(e))
    if not m:
        return None
    dim, val = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    return int(dim), int(val)


def _fixed_batch(lm: LoadedModel, ok: int, bad: int, e: BaseException) -> ModelError:
    if lm.kind == "export":
        return ModelError(
            f"{lm.name} runs on batch size {ok} but not {bad}: it was exported with a fixed batch size; export it "
            f"with a dynamic batch dimension: dynamic_shapes=({{0: torch.export.Dim('batch')}},) in torch.export.export"
        )
    return ModelError(
        f"{lm.name} runs on batch size {ok} but not {bad} ({_short(e)}); satkit batches images: "
        f"give a model that takes any batch size (trace or export it without a fixed batch dimension)"
    )


def _channels_message(lm: LoadedModel, takes: int, has: int, source: str, h: int, w: int) -> ModelError:
    return ModelError(
        f"{lm.name} takes {takes}-channel images but the data ({source}) has {has}-channel images: give --data with "
        f"{takes}-channel images, or --input-size {takes},{h},{w} (and --mean/--std if it normalizes) so satkit converts them"
    )


def _diagnose(lm: LoadedModel, x: torch.Tensor, e: BaseException, source: str, shape: str) -> ModelError:
    """Why a model fails at every batch size: channels, a fixed image size, or something else."""
    c, h, w = (int(v) for v in x.shape[1:])
    g = _guard(e)
    if g is not None:
        dim, val = g
        if dim == 0:
            return ModelError(
                f"{lm.name} runs only on batch size {val}: it was exported with a fixed batch size; export it with a "
                f"dynamic batch dimension: dynamic_shapes=({{0: torch.export.Dim('batch')}},) in torch.export.export"
            )
        if dim == 1:
            return _channels_message(lm, val, c, source, h, w)
        axis = "height" if dim == 2 else "width"
        return ModelError(
            f"{lm.name} takes images of a fixed {axis} {val} but the data ({source}) images are {h}x{w}: give "
            f"--input-size C,H,W with the size it was made for (satkit resizes the images to it)"
        )
    # Models without a data config see the pixels as they are: try the other common channel count.
    if c in (1, 3):
        other = x.expand(-1, 3, -1, -1) if c == 1 else x.mean(dim=1, keepdim=True)
        out, err = _forward(lm, other)
        if err is None and isinstance(out, torch.Tensor):
            return _channels_message(lm, 3 if c == 1 else 1, c, source, h, w)
    m = _CONV_CHANNELS.search(str(e))
    if m and int(m.group(2)) == c:
        return _channels_message(lm, int(m.group(1)), c, source, h, w)
    return ModelError(
        f"{lm.name} cannot run on {source} images of shape {shape} ({_short(e)}); give --data with images it "
        f"takes, or say what it takes with --input-size C,H,W and --mean/--std"
    )


def _class_mismatch(name: str, model_classes: int, data_classes: int, source: str) -> str:
    digits = source == "digits" or source.startswith("digits:")
    where = f"{source}, the default --data" if source == "digits" else source
    head = f"{name} has {model_classes} classes but the data ({where}) has {data_classes}"
    if model_classes == _IMAGENET_CLASSES:
        return (
            f"{head}: a {model_classes}-class ImageNet model needs ImageNet images; "
            f"give --data /path/to/imagenet/val (one sub-folder per class, all {model_classes} classes)"
        )
    if digits:
        return f"{head}: digits fits only 10-class digits models (satkit zoo list); give --data with images of the model's {model_classes} classes"
    return (
        f"{head}; give --data with images of the model's {model_classes} classes "
        f"(one sub-folder per class, sorted in the model's class order)"
    )
