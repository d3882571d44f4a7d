"""satkit logits: clean logits of one model -> one logits file (input of satkit ensemble)."""

from __future__ import annotations

from typing import List, Optional

import typer

from satkit.cli import common as c


def logits(
    model: str = typer.Argument(..., help="timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    output: str = typer.Option(..., "--output", "-o", help="Logits file to write (.safetensors, format satkit.logits); - for stdout."),
    data: str = c.DataOpt,
    n: Optional[int] = c.NOpt,
    data_seed: int = c.DataSeedOpt,
    canvas: Optional[int] = c.CanvasOpt,
    labels: Optional[str] = c.LabelsOpt,
    images: bool = typer.Option(
        True, "--images/--no-images",
        help="Store the clean images too, so the file also works as --data (5,000 ImageNet images: 750 MB per file; --no-images leaves them out).",
    ),
    batch_size: Optional[str] = typer.Option(c.DEFAULT_BATCH, "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    amp: str = c.AmpOpt,
    arch: Optional[str] = c.ArchOpt,
    model_kwargs: Optional[List[str]] = c.ModelKwargsOpt,
    allow_code: bool = c.CodeOpt,
    pretrained: bool = c.PretrainedOpt,
    mean: Optional[str] = c.MeanOpt,
    std: Optional[str] = c.StdOpt,
    input_size: Optional[str] = c.InputSizeOpt,
    name: Optional[str] = typer.Option(
        None, "--name",
        help="Name of the model in tables (default: the spec, or a file's stem). Must match the SAT matrix for satkit ensemble --sat.",
    ),
    quiet: bool = c.QuietOpt,
) -> None:
    """Compute MODEL's clean logits (float32, N x classes) on the clean set.

    The sample is drawn exactly as `satkit attack` draws it (same --data, --n,
    --data-seed, --canvas give the same data fingerprint), so logits files and
    attack files of one study describe the same images. The file holds logits,
    labels, ids, the clean images (unless --no-images) and provenance
    (`satkit info FILE`).
    NaN/inf logits are an error.

    Example:

        satkit logits digits/resnet-s1 -o logits/resnet-s1.safetensors

        satkit logits resnet50 --data /data/imagenet/val --n 5000 -o logits/resnet50.safetensors
    """
    from satkit.data import DataRequest
    from satkit.devices import resolve_device
    from satkit.jobs import logits_into_file

    c.set_quiet(quiet)
    bs = c.batch_size_value(batch_size)
    dev = resolve_device(device)
    opts = c.model_options(arch, allow_code, pretrained, mean, std, input_size, name, model_kwargs)
    with c.progress_bar() as p:
        res = logits_into_file(model, output, data=DataRequest(data, n, data_seed, canvas, labels), model_options=opts, device=dev,
                               batch_size=bs, amp=amp, store_images=images, rerun=c.rerun_line(),
                               progress=c.task_callback(p, f"logits {model} ({dev})"))
    name_ = res.header.model.name
    c.info(f"{name_}: {len(res.tensors['labels'])} images, top-1 accuracy {res.accuracy:.1%}; "
           + ("wrote to stdout" if str(output) == "-" else f"wrote {output}"))
