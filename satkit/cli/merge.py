"""satkit merge: join the shard files of one attack (satkit attack --shard i/n) into one attack file."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from satkit.cli import common as c


def merge(
    shards: List[Path] = typer.Argument(..., help="All shard files of one attack, in any order."),
    output: Path = typer.Option(..., "--output", "-o", help="Attack file to write (.safetensors)."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Join the shards of one attack into the attack file an unsharded run writes.

    Shards must come from the same model, data, attack settings and batch size,
    and all n of them must be present. The merged tensors equal those of the same
    attack run in one piece (each image is attacked in the same batch either way).

    Example:

        for i in 0 1 2 3; do satkit attack resnet50 --data val/ --shard $i/4 -o adv/resnet50.$i.safetensors & done; wait

        satkit merge adv/resnet50.*.safetensors -o adv/resnet50.safetensors
    """
    from satkit.attacks.shards import merge_shards
    from satkit.formats.attack import FORMAT
    from satkit.formats.files import read_satkit_file, write_satkit_file
    from satkit.io.atomic import check_outputs

    c.set_quiet(quiet)
    check_outputs({"-o": output}, shards)
    files = [read_satkit_file(s, FORMAT) for s in shards]
    tensors, header = merge_shards(files)
    write_satkit_file(output, header, tensors)
    st = header.stats
    c.info(f"{header.model.name}: merged {len(files)} shards, {len(tensors['labels'])} images, clean accuracy "
           f"{st.source_clean_accuracy:.1%}, attack success {st.attack_success_rate:.1%}; wrote {output}")
