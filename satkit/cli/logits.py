"""satkit logits: clean logits of one model -> one logits file (input of satkit ensemble)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from satkit.cli import common as c


def logits(
    model: str = typer.Argument(..., help="timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    output: Path = typer.Option(..., "--output", "-o", help="Logits file to write (.safetensors, format satkit.logits)."),
    data: str = c.DataOpt,
    n: Optional[int] = c.NOpt,
    data_seed: int = c.DataSeedOpt,
    canvas: Optional[int] = c.CanvasOpt,
    images: bool = typer.Option(True, "--images/--no-images", help="Store the clean images too, so the file also works as --data (5,000 ImageNet images: 750 MB per file; --no-images leaves them out)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per batch."),
    device: str = c.DeviceOpt,
    amp: str = c.AmpOpt,
    arch: Optional[str] = c.ArchOpt,
    allow_pickle: bool = c.PickleOpt,
    pretrained: bool = c.PretrainedOpt,
    mean: Optional[str] = c.MeanOpt,
    std: Optional[str] = c.StdOpt,
    input_size: Optional[str] = c.InputSizeOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Name of the model in tables (default: the spec, or a file's stem). Must match the SAT matrix for satkit ensemble --sat."),
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
    from satkit.logits import compute_logits, save_logits
    from satkit.data import load_data
    from satkit.devices import resolve_device
    from satkit.io.atomic import check_output_path
    from satkit.models import load_model
    from satkit.provenance import shell_quote

    c.set_quiet(quiet)
    if batch_size <= 0:
        c.fail(f"--batch-size must be positive, got {batch_size}")
    check_output_path(output)  # fail before any expensive work
    dev = resolve_device(device)
    opts = c.model_options(arch, allow_pickle, pretrained, mean, std, input_size, name)
    clean = load_data(data, canvas=canvas, n=n, seed=data_seed)
    lm = load_model(model, opts, dev)
    with c.progress_bar() as p:
        res = compute_logits(lm, clean, batch_size=batch_size, amp=amp, store_images=images, progress=c.task_callback(p, f"logits {lm.name} ({dev})"))
    rerun = shell_quote(["satkit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("satkit") else None
    save_logits(res, output, rerun=rerun)
    c.info(f"{lm.name}: {len(clean)} images, top-1 accuracy {res.accuracy:.1%}; wrote {output}")
