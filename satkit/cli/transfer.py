"""satkit transfer: evaluate target models on attack files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from satkit.cli import common as c


def transfer(
    inputs: List[str] = typer.Argument(
        ...,
        help="One or more TARGET models followed by one or more attack files (.safetensors written by satkit attack; - reads one from stdin).",
    ),
    output: str = typer.Option("-", "--output", "-o", help="Transfer table (CSV; .parquet for Parquet); - for stdout."),
    per_sample: Optional[Path] = typer.Option(None, "--per-sample", help="Also write per-sample outcomes here (.csv or .parquet)."),
    batch_size: Optional[str] = typer.Option(c.DEFAULT_BATCH, "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    amp: str = c.AmpOpt,
    compile_: bool = c.CompileOpt,
    shard: Optional[str] = typer.Option(
        None, "--shard",
        help="i/n: evaluate only every n-th attack file starting at i (0-based), for job arrays; give all shards' tables to satkit matrix.",
    ),
    arch: Optional[str] = c.ArchOpt,
    model_kwargs: Optional[List[str]] = c.ModelKwargsOpt,
    allow_code: bool = c.CodeOpt,
    pretrained: bool = c.PretrainedOpt,
    quiet: bool = c.QuietOpt,
) -> None:
    """Evaluate each TARGET on each attack file: one row per (source, target) with |X_AB| and errors.

    Arguments ending in .safetensors that are satkit attack files are attack
    files; the others are target models. Each target is loaded once; only samples
    both the source and the target classify correctly (X_AB) are run on the
    adversarial images. Attack files must come from the same clean set.

    Example:

        satkit transfer vit_small_patch16_224 adv/*.safetensors -o transfer/vit_small.csv

        satkit transfer digits/vit-s1 digits/mixer-s1 adv/*.safetensors -o t.csv --per-sample t_samples.parquet

        satkit transfer vit_small_patch16_224 adv/*.safetensors --shard $SLURM_ARRAY_TASK_ID/4 -o t.$SLURM_ARRAY_TASK_ID.csv
    """
    import polars as pl

    from satkit.devices import resolve_device
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import write_table
    from satkit.jobs import evaluate_target
    from satkit.transfer import TRANSFER_SCHEMA, open_attack_files

    c.set_quiet(quiet)
    bs = c.batch_size_value(batch_size)
    shard_ = c.parse_shard(shard)
    targets, files = _split_inputs(inputs)
    if not targets:
        c.fail("no target model given; usage: satkit transfer TARGET... ATTACK_FILE...")
    if not files:
        c.fail("no attack files given; usage: satkit transfer TARGET... ATTACK_FILE...")
    check_outputs({"--output": output, "--per-sample": per_sample}, inputs=[*files, *(t for t in targets if Path(t).is_file())])
    opened = open_attack_files(files)
    if shard_ is not None:
        opened = opened[shard_[0]::shard_[1]]
        if not opened:
            c.info(f"shard {shard}: no attack file falls to this shard ({len(files)} files); nothing to do")
    dev = resolve_device(device)
    opts = c.model_options(arch, allow_code, pretrained, model_kwargs=model_kwargs)
    tables, samples = [], []
    with c.progress_bar() as p:
        for spec in targets if opened else []:
            o = evaluate_target(spec, opened, model_options=opts, device=dev, batch_size=bs, amp=amp, compile=compile_,
                                per_sample=per_sample is not None, progress=c.task_callback(p, f"transfer {spec}"))
            tables.append(o.result.table())
            if per_sample is not None:
                samples.append(o.result.per_sample_table())
    write_table(pl.concat(tables) if tables else pl.DataFrame(schema=TRANSFER_SCHEMA), output)
    if per_sample is not None:
        write_table(pl.concat(samples) if samples else pl.DataFrame(), per_sample)
    if output != "-":
        c.info(f"wrote {output} ({sum(t.height for t in tables)} rows)")


def _split_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Attack files are .safetensors files with satkit.attack metadata; anything else is a target model."""
    from satkit.errors import InputFileError, SatkitError
    from satkit.io.tensorfile import read_tensor_file

    targets, files = [], []
    for a in inputs:
        if a == "-":  # an attack file piped from `satkit attack ... -o -`
            files.append(a)
            continue
        if a.endswith(".safetensors"):
            if not Path(a).exists():
                raise InputFileError(f"{a}: no such file")
            try:
                read_tensor_file(a, "satkit.attack")  # which kind (the container says); verified when opened
                files.append(a)
                continue
            except SatkitError as e:
                if "not one satkit wrote" not in str(e):
                    raise  # damaged, or a satkit file of another kind
        targets.append(a)  # a model spec, or weights for --arch
    return targets, files
