"""Split one attack over several jobs (``satkit attack --shard i/n``) and join the pieces (``satkit merge``).

Shard ``i`` of ``n`` attacks a contiguous run of whole batches of the clean set
(batches ``[i*B/n, (i+1)*B/n)`` of ``B``), so every image sits in the same batch,
with the same neighbours and the same per-sample random start, as in an
unsharded run: the merged file's tensors equal the unsharded file's.
A shard file's header records its rows (:class:`satkit.formats.attack.ShardInfo`); transfer refuses it until merged.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.formats.attack import OPTIONAL_TENSORS, AttackHeader, AttackStats, ShardInfo
from satkit.formats.attack import TENSORS as SHARDED_TENSORS
from satkit.formats.sections import DataInfo


def shard_rows(n: int, batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Row range [start, stop) of shard ``i`` of ``count``: a contiguous run of whole batches."""
    i, count = shard
    if count <= 0 or not 0 <= i < count:
        raise ParameterError(f"--shard {i}/{count}: need 0 <= i < n (shards are numbered from 0)")
    batches = math.ceil(n / batch_size)
    b0, b1 = i * batches // count, (i + 1) * batches // count
    return min(n, b0 * batch_size), min(n, b1 * batch_size)


def merge_shards(files: list[Any]) -> tuple[dict[str, torch.Tensor], AttackHeader]:
    """Tensors and header of the whole attack from its opened shard files (any order)."""
    if not files:
        raise InputFileError("no shard files given")
    for f in files:
        if f.header.shard is None:
            raise InputFileError(f"{f.path} is not a shard (it was written without --shard); nothing to merge")
    ref = files[0]
    rh: AttackHeader = ref.header
    key, count = rh.attack_key, rh.shard.count
    for f in files[1:]:
        h: AttackHeader = f.header
        if h.attack_key != key:
            raise MismatchError(f"{f.path} and {ref.path} are shards of different attacks (model, data or settings differ)")
        if h.batch_size != rh.batch_size or h.shard.count != count:
            raise MismatchError(f"{f.path} and {ref.path} were split differently (--shard n or --batch-size differ)")
    by_index: dict[int, Any] = {}
    for f in files:
        i = f.header.shard.index
        if i in by_index:
            raise MismatchError(f"shard {i}/{count} is given twice ({by_index[i].path} and {f.path})")
        by_index[i] = f
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise InputFileError(f"shards {', '.join(f'{i}/{count}' for i in missing)} are missing; give all {count} shard files")
    ordered = [by_index[i] for i in range(count)]
    stop = 0
    for f in ordered:
        sh: ShardInfo = f.header.shard
        if sh.start != stop:
            raise MismatchError(f"{f.path}: rows {sh.start}..{sh.stop} do not follow the previous shard (ends at {stop})")
        stop = sh.stop
    if stop != rh.shard.n_total:
        raise MismatchError(f"the shards cover {stop} of {rh.shard.n_total} images")
    tensors = {}
    names = [*SHARDED_TENSORS, *(k for k in OPTIONAL_TENSORS if all(k in f.keys for f in ordered))]
    for name in names:
        parts = [f.get(name) for f in ordered if f.header.shard.stop > f.header.shard.start]
        tensors[name] = torch.cat(parts) if parts else ordered[0].get(name)
    header = replace(rh, shard=None, rerun=None, stats=None)
    # each shard was verified alone, but only the joined clean set can be checked against the
    # fingerprint, which names the whole set
    header.verify(tensors, f"{ordered[0].path} (+{count - 1} more shards)",
                  todo="remake the shards with `satkit attack --shard i/n`")
    sc, sac = tensors["source_correct"], tensors["source_adv_correct"]
    success = float((~sac[sc]).float().mean()) if sc.any() else float("nan")
    attacked = [f.header.stats.attacked if f.header.stats is not None else None for f in ordered]
    total = sum(attacked) if all(isinstance(a, int) and not isinstance(a, bool) for a in attacked) else None
    stats = AttackStats(source_clean_accuracy=round(float(sc.float().mean()), 6), attack_success_rate=round(success, 6),
                        attacked=total)
    return tensors, replace(header, stats=stats, merged_from=[Path(f.path).name for f in ordered])


def attack_shard(model, data, params, shard: tuple[int, int], *, batch_size: int, amp: str = "off", progress=None):
    """Attack shard ``i`` of ``n`` of ``data`` (a decoded CleanSet): an AttackResult for its rows.

    The provenance names the whole clean set (its fingerprint and size), so shard
    files of one attack agree with each other and with the merged file; ``shard``
    records which rows this file holds.
    """
    from satkit.attacks.runner import run_attack
    from satkit.provenance import data_provenance

    start, stop = shard_rows(len(data), batch_size, shard)
    sub = replace(data, images=data.images[start:stop], labels=data.labels[start:stop], ids=data.ids[start:stop])
    res = run_attack(model, sub, params, batch_size=batch_size, amp=amp, progress=progress) if stop > start else None
    if res is None:
        raise ParameterError(f"--shard {shard[0]}/{shard[1]} gets no images ({len(data)} images in "
                             f"{math.ceil(len(data) / batch_size)} batches of {batch_size}); use fewer shards")
    res.header = replace(res.header, data=DataInfo.parse(data_provenance(data)),
                         shard=ShardInfo(index=shard[0], count=shard[1], start=start, stop=stop, n_total=len(data))).keyed()
    return res
