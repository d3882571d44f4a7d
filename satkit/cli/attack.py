"""satkit attack: PGD on one source model -> one attack file."""

from __future__ import annotations

from typing import List, Optional

import typer

from satkit.cli import common as c


def attack(
    model: str = typer.Argument(..., help="timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    output: str = typer.Option(..., "--output", "-o", help="Attack file to write (.safetensors); - for stdout."),
    data: str = c.DataOpt,
    n: Optional[int] = c.NOpt,
    data_seed: int = c.DataSeedOpt,
    canvas: Optional[int] = c.CanvasOpt,
    labels: Optional[str] = c.LabelsOpt,
    attack_name: str = c.AttackOpt,
    eps: Optional[str] = typer.Option(
        None, "--eps",
        help="L-infinity budget in pixel scale [0, 1]; a fraction like 8/255 is fine. Default: 0.1 for digits, 8/255 otherwise (the same in every command). "
        "uint8 files store floor(255 eps)/255.",
    ),
    steps: int = c.StepsOpt,
    step_size: Optional[str] = c.StepSizeOpt,
    random_start: Optional[bool] = typer.Option(
        None, "--random-start/--no-random-start",
        help="Start from uniform noise in the eps-ball (seeded per sample). Default: the attack's published choice (on for pgd, apgd-ce, lf-pgd; off for "
        "mifgsm, vmifgsm).",
    ),
    seed: int = typer.Option(
        0, "--seed",
        help="Seed of the random start and of any sampling inside the attack (per sample: files do not depend on batch size, shard or device).",
    ),
    decay: Optional[float] = c.DecayOpt,
    vmi_samples: Optional[int] = c.VmiSamplesOpt,
    vmi_beta: Optional[float] = c.VmiBetaOpt,
    rho: Optional[float] = c.RhoOpt,
    band: Optional[float] = c.BandOpt,
    attack_all: bool = c.AttackAllOpt,
    storage: str = typer.Option(
        "uint8", "--storage",
        help="Storage dtype of clean/adv images: uint8, float16 or float32. The eps bound holds exactly after rounding.",
    ),
    batch_size: Optional[str] = typer.Option(c.DEFAULT_BATCH, "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    amp: str = c.AmpOpt,
    compile_: bool = c.CompileOpt,
    shard: Optional[str] = typer.Option(
        None, "--shard",
        help="i/n: attack only shard i (0-based) of n, a run of whole batches, for job arrays; join the n files with satkit merge.",
    ),
    arch: Optional[str] = c.ArchOpt,
    model_kwargs: Optional[List[str]] = c.ModelKwargsOpt,
    allow_code: bool = c.CodeOpt,
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

        satkit attack digits/vit-s1 -o adv/vit-s1.safetensors

        satkit attack digits/vit-s1 -o - | satkit transfer digits/resnet-s1 - -o t.csv

        satkit attack resnet50 --data val/ --shard $SLURM_ARRAY_TASK_ID/8 -o adv/resnet50.$SLURM_ARRAY_TASK_ID.safetensors
    """
    from satkit.models.hub import early_answer

    early_answer(model, pretrained, arch)  # weights that cannot be had: say so before seconds of torch start-up

    from satkit.data import DataRequest
    from satkit.devices import resolve_device
    from satkit.io.pixels import budget_text
    from satkit.jobs import AttackJob, attack_into_file

    c.set_quiet(quiet)
    params = c.attack_params(data, attack_name, eps, steps, step_size, seed, storage, random_start, attack_all,
                             decay=decay, samples=vmi_samples, beta=vmi_beta, rho=rho, band=band)
    job = AttackJob(model, data=DataRequest(data, n, data_seed, canvas, labels), params=params,
                    model_options=c.model_options(arch, allow_code, pretrained, mean, std, input_size, name, model_kwargs),
                    batch_size=c.batch_size_value(batch_size), amp=amp, compile=compile_, shard=c.parse_shard(shard))
    dev = resolve_device(device)
    with c.progress_bar() as p:
        label = f"{params.attack} {job.name} (eps={params.eps:.4g}, {params.steps} steps, {dev})"
        if job.shard is not None:
            label += f", shard {job.shard[0]}/{job.shard[1]}"
        o = attack_into_file(job, output, device=dev, rerun=c.rerun_line(), progress=c.task_callback(p, label))
    st = o.stats
    skipped = o.n - st["attacked"] if isinstance(st.get("attacked"), int) else 0
    c.info(
        f"{o.name}: {o.n} images, clean accuracy {st['source_clean_accuracy']:.1%}, attack success "
        f"{st['attack_success_rate']:.1%} of correctly classified ({params.attack}, {budget_text(params.eps, params.storage)}, "
        f"{params.steps} steps); "
        + (f"{skipped} misclassified image(s) not attacked (no SAT cell reads them; --attack-all attacks them too); " if skipped else "")
        + ("wrote to stdout" if str(output) == "-" else f"wrote {output}")
    )
