"""Split one attack over several jobs (``satkit attack --shard i/n``) and join the pieces (``satkit merge``).

Shard ``i`` of ``n`` attacks a contiguous run of whole batches of the clean set
(batches ``[i*B/n, (i+1)*B/n)`` of ``B``), so every image sits in the same batch,
with the same neighbours and the same per-sample random start, as in an
unsharded run: the merged file's tensors equal the unsharded file's.
A shard file records ``provenance["shard"]``; transfer refuses it until merged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.io.verify import verify_attack_tensors

SHARDED_TENSORS = ("clean", "adv", "labels", "ids", "source_correct", "source_adv_correct", "clean_logits")
OPTIONAL_TENSORS = ("source_adv_pred",)  # absent from files made before same-class rates


def shard_rows(n: int, batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Row range [start, stop) of shard ``i`` of ``count``: a contiguous run of whole batches."""
    i, count = shard
    if count <= 0 or not 0 <= i < count:
        raise ParameterError(f"--shard {i}/{count}: need 0 <= i < n (shards are numbered from 0)")
    batches = math.ceil(n / batch_size)
    b0, b1 = i * batches // count, (i + 1) * batches // count
    return min(n, b0 * batch_size), min(n, b1 * batch_size)


def merge_shards(files: list[Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and provenance of the whole attack from its opened shard files (any order)."""
    if not files:
        raise InputFileError("no shard files given")
    for f in files:
        if not f.provenance.get("shard"):
            raise InputFileError(f"{f.path} is not a shard (it was written without --shard); nothing to merge")
    ref = files[0]
    key, count = ref.provenance.get("attack_key"), ref.provenance["shard"]["count"]
    for f in files[1:]:
        if f.provenance.get("attack_key") != key:
            raise MismatchError(f"{f.path} and {ref.path} are shards of different attacks (model, data or settings differ)")
        if f.provenance.get("batch_size") != ref.provenance.get("batch_size") or f.provenance["shard"]["count"] != count:
            raise MismatchError(f"{f.path} and {ref.path} were split differently (--shard n or --batch-size differ)")
    by_index: dict[int, Any] = {}
    for f in files:
        i = int(f.provenance["shard"]["index"])
        if i in by_index:
            raise MismatchError(f"shard {i}/{count} is given twice ({by_index[i].path} and {f.path})")
        by_index[i] = f
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise InputFileError(f"shards {', '.join(f'{i}/{count}' for i in missing)} are missing; give all {count} shard files")
    ordered = [by_index[i] for i in range(count)]
    stop = 0
    for f in ordered:
        sh = f.provenance["shard"]
        if sh["start"] != stop:
            raise MismatchError(f"{f.path}: rows {sh['start']}..{sh['stop']} do not follow the previous shard (ends at {stop})")
        stop = sh["stop"]
    if stop != ref.provenance["shard"]["n_total"]:
        raise MismatchError(f"the shards cover {stop} of {ref.provenance['shard']['n_total']} images")
    tensors = {}
    names = [*SHARDED_TENSORS, *(k for k in OPTIONAL_TENSORS if all(k in f.keys for f in ordered))]
    for name in names:
        parts = [f.get(name) for f in ordered if f.provenance["shard"]["stop"] > f.provenance["shard"]["start"]]
        tensors[name] = torch.cat(parts) if parts else ordered[0].get(name)
    prov = {k: v for k, v in ref.provenance.items() if k not in ("shard", "rerun", "stats")}
    # each shard was verified alone, but only the joined clean set can be checked against the
    # fingerprint, which names the whole set
    verify_attack_tensors(tensors, prov, f"{ordered[0].path} (+{count - 1} more shards)",
                          todo="remake the shards with `satkit attack --shard i/n`")
    sc, sac = tensors["source_correct"], tensors["source_adv_correct"]
    success = float((~sac[sc]).float().mean()) if sc.any() else float("nan")
    prov["stats"] = {"source_clean_accuracy": round(float(sc.float().mean()), 6), "attack_success_rate": round(success, 6)}
    attacked = [f.provenance.get("stats", {}).get("attacked") for f in ordered]
    if all(isinstance(a, int) and not isinstance(a, bool) for a in attacked):
        prov["stats"]["attacked"] = sum(attacked)
    prov["merged_from"] = [Path(f.path).name for f in ordered]
    return tensors, prov


def attack_shard(model, data, params, shard: tuple[int, int], *, batch_size: int, amp: str = "off", progress=None):
    """Attack shard ``i`` of ``n`` of ``data`` (a decoded CleanSet): an AttackResult for its rows.

    The provenance names the whole clean set (its fingerprint and size), so shard
    files of one attack agree with each other and with the merged file; ``shard``
    records which rows this file holds.
    """
    from dataclasses import replace

    from satkit.attacks.runner import attack_key, run_attack
    from satkit.provenance import data_provenance

    start, stop = shard_rows(len(data), batch_size, shard)
    sub = replace(data, images=data.images[start:stop], labels=data.labels[start:stop], ids=data.ids[start:stop])
    res = run_attack(model, sub, params, batch_size=batch_size, amp=amp, progress=progress) if stop > start else None
    if res is None:
        raise ParameterError(f"--shard {shard[0]}/{shard[1]} gets no images ({len(data)} images in "
                             f"{math.ceil(len(data) / batch_size)} batches of {batch_size}); use fewer shards")
    res.provenance["data"] = data_provenance(data)
    res.provenance["attack_key"] = attack_key(res.provenance)
    res.provenance["shard"] = {"index": shard[0], "count": shard[1], "start": start, "stop": stop, "n_total": len(data)}
    return res
