"""satkit attack: PGD on one source model -> one attack file."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer

from satkit.cli import common as c


def attack(
    model: str = typer.Argument(..., help="timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    output: Path = typer.Option(..., "--output", "-o", help="Attack file to write (.safetensors)."),
    data: str = c.DataOpt,
    n: Optional[int] = c.NOpt,
    data_seed: int = c.DataSeedOpt,
    canvas: Optional[int] = c.CanvasOpt,
    eps: str = typer.Option("8/255", "--eps", help="L-infinity budget in pixel scale [0, 1]; a fraction like 8/255 is fine. (satkit study picks 0.1 for digits.)"),
    steps: int = typer.Option(50, "--steps", help="PGD iterations (paper: 50)."),
    step_size: Optional[str] = typer.Option(None, "--step-size", help="Step per iteration, pixel scale. Default 2.5*eps/steps."),
    random_start: bool = typer.Option(True, "--random-start/--no-random-start", help="Start from uniform noise in the eps-ball (seeded per sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random start."),
    storage: str = typer.Option("uint8", "--storage", help="Storage dtype of clean/adv images: uint8, float16 or float32. The eps bound holds exactly after rounding."),
    batch_size: str = typer.Option("64", "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    amp: str = c.AmpOpt,
    compile_: bool = c.CompileOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: attack only shard i (0-based) of n, a run of whole batches, for job arrays; join the n files with satkit merge."),
    arch: Optional[str] = c.ArchOpt,
    allow_pickle: bool = c.PickleOpt,
    pretrained: bool = c.PretrainedOpt,
    mean: Optional[str] = c.MeanOpt,
    std: Optional[str] = c.StdOpt,
    input_size: Optional[str] = c.InputSizeOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Name of the model in tables (default: the spec, or a file's stem)."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Attack MODEL with PGD (L-infinity) and store clean + adversarial images.

    Loss: cross-entropy on the true labels. The file holds clean, adv, labels, ids,
    source_correct and provenance (`satkit info FILE`).

    Example:

        satkit attack resnet50 --data /data/imagenet/val --n 5000 -o adv/resnet50.safetensors

        satkit attack digits/vit-s1 --eps 0.1 -o adv/vit-s1.safetensors

        satkit attack resnet50 --data val/ --shard $SLURM_ARRAY_TASK_ID/8 -o adv/resnet50.$SLURM_ARRAY_TASK_ID.safetensors
    """
    from satkit.attacks import AttackParams, run_attack, save_attack
    from satkit.attacks.shards import attack_shard
    from satkit.models.batching import resolve_batch_size
    from satkit.data import FolderImages, ImageStream, load_data, open_data
    from satkit.models.registry import prepare_model
    from satkit.data.stream import default_workers
    from satkit.devices import resolve_device
    from satkit.io.atomic import check_output_path
    from satkit.models import load_model
    from satkit.provenance import shell_quote

    c.set_quiet(quiet)
    bs = c.batch_size_value(batch_size)
    shard_ = c.parse_shard(shard)
    if shard_ is not None and bs == "auto":
        c.fail("--shard needs a fixed --batch-size (every shard must cut the data into the same batches)")
    params = AttackParams(
        eps=c.parse_fraction(eps, "--eps"), steps=steps,
        step_size=c.parse_fraction(step_size, "--step-size") if step_size else None,
        random_start=random_start, seed=seed, storage=storage,
    )
    check_output_path(output)  # fail before any expensive work
    dev = resolve_device(device)
    opts = c.model_options(arch, allow_pickle, pretrained, mean, std, input_size, name)
    with contextlib.ExitStack() as stack:
        if shard_ is not None:  # a shard names the whole clean set (fingerprint): decode it all, attack a slice
            clean = load_data(data, canvas=canvas, n=n, seed=data_seed)
        else:
            clean = open_data(data, canvas=canvas, n=n, seed=data_seed)
        if isinstance(clean, FolderImages):  # decode in background threads from now on: during model build and the attack
            clean = stack.enter_context(clean.stream(workers=default_workers(busy_device=dev.type == "cpu")))
        lm = prepare_model(load_model(model, opts, dev), compile=compile_)
        first = clean.wait(0, 1) if isinstance(clean, ImageStream) else clean.images[:1]
        b = resolve_batch_size(bs, lm, first, kind="attack", n=len(clean), amp=amp)
        with c.progress_bar() as p:
            label = f"attack {lm.name} (eps={params.eps:.4g}, {params.steps} steps, {dev})"
            if shard_ is not None:
                label += f", shard {shard_[0]}/{shard_[1]}"
                res = attack_shard(lm, clean, params, shard_, batch_size=b, amp=amp, progress=c.task_callback(p, label))
            else:
                res = run_attack(lm, clean, params, batch_size=b, amp=amp, progress=c.task_callback(p, label))
    rerun = shell_quote(["satkit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("satkit") else None
    save_attack(res, output, rerun=rerun)
    c.info(
        f"{lm.name}: {len(res.tensors['labels'])} images, clean accuracy {res.clean_accuracy:.1%}, attack success "
        f"{res.success_rate:.1%} of correctly classified (eps={params.eps:.4g}, {params.steps} steps); wrote {output}"
    )
