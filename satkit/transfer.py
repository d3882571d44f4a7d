"""Evaluate target models on attack files: the counts SAT needs.

For one target and one attack file (source A) over the clean set X:

- ``n_both`` = |X_AB|: samples the source AND the target classify correctly when clean
- ``n_fooled``: samples of X_AB whose adversarial example made on A the target gets wrong
- ``n_same_class``: those of them the target puts in the same wrong class as A does
  (the direction of misclassification, the paper's appendix G.2); empty for attack
  files made before satkit stored A's adversarial predictions

Each target is loaded once; its clean predictions are computed once per clean
set (all files share one, checked by fingerprint); only X_AB samples get a
forward pass on the adversarial images, read in batches from the memory-mapped file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import polars as pl
import torch
from safetensors import safe_open

from satkit.attacks.quantize import as_float
from satkit.devices import model_numerics, resolve_amp
from satkit.errors import DataError, InputFileError, MismatchError, ParameterError
from satkit.formats.files import SatkitFile, read_satkit_file
from satkit.formats.transfer import ADDED_COLUMNS, TRANSFER_SCHEMA, source_columns
from satkit.io.prefetch import ahead, pinned
from satkit.models.registry import ensure_num_classes
from satkit.models.wrapper import LoadedModel
from satkit.provenance import ProgressFn


@dataclass
class TransferResult:
    rows: list[dict[str, Any]]
    per_sample: list[pl.DataFrame] = field(default_factory=list)
    forward_samples: int = 0  # images pushed through the target (clean + adversarial), for cost accounting

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=TRANSFER_SCHEMA) if self.rows else pl.DataFrame(schema=TRANSFER_SCHEMA)

    def per_sample_table(self) -> pl.DataFrame:
        return pl.concat(self.per_sample) if self.per_sample else pl.DataFrame()


__all__ = ["ADDED_COLUMNS", "TRANSFER_SCHEMA", "TransferResult", "open_attack_files", "run_transfer"]


def open_attack_files(paths: Iterable[str], verify: bool = True) -> list[SatkitFile]:
    """Open and cross-check attack files: same clean set (fingerprint) or a clear error.

    ``verify=False`` only peeks (provenance and tensor names), for callers that
    decide what to do before reading any pixels; verify what you then use.
    """
    files = [read_satkit_file(p, "satkit.attack", verify=verify) for p in paths]
    if not files:
        raise InputFileError("no attack files given")
    for f in files:
        for key in ("clean", "adv", "labels", "ids", "source_correct"):
            if key not in f.keys:
                raise InputFileError(f"{f.path}: tensor '{key}' is missing; the file is incomplete")
        sh = f.header.shard  # the header's checks: a data fingerprint is there
        if sh is not None:
            raise InputFileError(
                f"{f.path} holds only shard {sh.index}/{sh.count} of an attack; "
                "join all shards first: satkit merge SHARD_FILES... -o FILE"
            )
    ref = files[0].header.data.fingerprint
    for f in files[1:]:
        fp = f.header.data.fingerprint
        if fp != ref:
            raise MismatchError(
                f"{f.path} and {files[0].path} were made from different clean sets (fingerprints "
                f"{fp[:8]} vs {ref[:8]}); attack every model on the same --data/--n/--seed"
            )
    return files


def _batches(n: int, bs: int):
    for s in range(0, n, bs):
        yield s, min(s + bs, n)


def _predict(model: LoadedModel, images: torch.Tensor, batch_size: int, amp_dtype) -> torch.Tensor:
    """Argmax predictions for stored images (any storage dtype), batched."""
    return model.predict_logits(images, batch_size, amp_dtype).argmax(1)


def run_transfer(
    target: LoadedModel,
    files: list[SatkitFile],
    *,
    batch_size: int = 128,
    amp: str = "off",
    per_sample: bool = False,
    own_attack: SatkitFile | None = None,
    progress: ProgressFn | None = None,
) -> TransferResult:
    """Evaluate ``target`` on every attack file; progress counts files.

    The target's clean predictions are computed once; when one of the files is
    the target's own attack (same name and weights), its stored ``source_correct``
    is reused and the target runs on adversarial X_AB samples only.
    """
    if batch_size <= 0:
        raise ParameterError(f"--batch-size must be positive, got {batch_size}")
    amp_dtype = resolve_amp(amp, target.device)
    ref = files[0]
    labels = ref.get("labels")
    clean = ref.get("clean")
    ensure_num_classes(target, as_float(clean[:1]).to(target.device))
    if len(labels) and int(labels.max()) >= target.num_classes:
        raise DataError(
            f"labels go up to {int(labels.max())} but target {target.name} has {target.num_classes} classes; "
            "the attack files were made for another label set"
        )
    res = TransferResult(rows=[])
    own = [own_attack] if own_attack is not None else [
        f for f in files if f.header.model.same_weights(target.name, target.weights_id)]
    with model_numerics(target.device, amp):
        if own and own[0].header.data.fingerprint == ref.header.data.fingerprint:
            target_correct = own[0].get("source_correct")
        else:
            target_correct = _predict(target, clean, batch_size, amp_dtype) == labels
            res.forward_samples += len(clean)
        if progress:
            progress(0, len(files))
        for i, f in enumerate(files):
            row, ps, n_fwd = _transfer_one(target, f, labels, target_correct, batch_size, amp_dtype, per_sample)
            res.rows.append(row)
            res.forward_samples += n_fwd
            if ps is not None:
                res.per_sample.append(ps)
            if progress:
                progress(i + 1, len(files))
    return res


def _transfer_one(target, f: SatkitFile, labels, target_correct, batch_size, amp_dtype, per_sample):
    src_correct = f.get("source_correct")
    if not torch.equal(f.get("labels"), labels):
        raise MismatchError(f"{f.path}: labels differ from the other attack files although the fingerprint matches")
    both = src_correct & target_correct
    idx = torch.nonzero(both).flatten()
    adv_pred = torch.full((len(labels),), -1, dtype=torch.int64)
    # stream X_AB rows from the memory map in batches, read and pinned one batch ahead of the
    # target: memory stays O(batch), not O(file)
    with safe_open(str(f.path), framework="pt") as sf:
        adv_slice = sf.get_slice("adv")

        def read(b: tuple[int, int]) -> tuple[int, int, torch.Tensor]:
            rows = idx[b[0]:b[1]]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            return b[0], b[1], pinned(adv_slice[lo:hi][rows - lo], target.device)

        if len(idx):
            adv_pred[idx] = target.logits_of(ahead(read, _batches(len(idx), batch_size)), len(idx), amp_dtype).argmax(1)
    fooled = both & (adv_pred != labels)
    same = fooled & (adv_pred == f.get("source_adv_pred")) if "source_adv_pred" in f.keys else None
    src = source_columns(f.header)
    row = {
        "source": src["source"],
        "target": target.name,
        "n": int(len(labels)),
        "n_source_correct": int(src_correct.sum()),
        "n_target_correct": int(target_correct.sum()),
        "n_both": int(both.sum()),
        "n_fooled": int(fooled.sum()),
        "fingerprint": src["fingerprint"],
        "attack_key": src["attack_key"],
        "target_weights_id": target.weights_id,
        "eps": src["eps"],
        "steps": src["steps"],
        "attack": src["attack"],
        "n_same_class": int(same.sum()) if same is not None else None,
    }
    ps = None
    if per_sample:
        ps = pl.DataFrame({
            "source": [row["source"]] * len(labels),
            "target": [target.name] * len(labels),
            "attack_key": [row["attack_key"]] * len(labels),
            "id": f.get("ids").numpy(),
            "label": labels.numpy(),
            "source_correct": src_correct.numpy(),
            "target_correct": target_correct.numpy(),
            "target_adv_pred": adv_pred.numpy(),
            "fooled": fooled.numpy(),
            "same_class": same.numpy() if same is not None else pl.Series([None] * len(labels), dtype=pl.Boolean),
        })
    return row, ps, int(len(idx))
