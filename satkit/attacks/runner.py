"""Run an attack over a clean set and store the result (library side of ``satkit attack``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from satkit.attacks.base import ATTACKS, AttackParams
from satkit.attacks.quantize import STORAGE_DTYPES, as_float, clean_for_storage, quantize_adv
from satkit.data.base import CleanSet
from satkit.data.stream import ImageStream
from satkit.devices import resolve_amp
from satkit.errors import DataError, ParameterError
from satkit.io.tensorfile import canonical_json, write_satkit_file
from satkit.models.registry import ensure_num_classes
from satkit.models.wrapper import LoadedModel
from satkit.provenance import ProgressFn, data_provenance, versions

ATTACK_FORMAT = "satkit.attack"


@dataclass
class AttackResult:
    tensors: dict[str, torch.Tensor]
    provenance: dict[str, Any]

    @property
    def clean_accuracy(self) -> float:
        return float(self.tensors["source_correct"].float().mean())

    @property
    def success_rate(self) -> float:
        """Fraction of the source's correctly classified samples that its stored adversarials fool."""
        sc = self.tensors["source_correct"]
        if not sc.any():
            return float("nan")
        return float((~self.tensors["source_adv_correct"][sc]).float().mean())


def random_start_noise(ids: torch.Tensor, shape: tuple[int, ...], eps: float, seed: int) -> torch.Tensor:
    """U(-eps, eps) noise, seeded per sample id: the same for any batch size, shard or device."""
    out = torch.empty((len(ids), *shape), dtype=torch.float32)
    g = torch.Generator()
    for j, i in enumerate(ids.tolist()):
        g.manual_seed((seed * 1_000_003 + int(i)) % (2**63 - 1))
        out[j] = torch.rand(shape, generator=g) * (2 * eps) - eps
    return out


def check_labels(model: LoadedModel, data: CleanSet | ImageStream) -> None:
    if len(data) == 0:
        raise DataError(f"data source {data.source} has no samples")
    first = data.wait(0, 1) if isinstance(data, ImageStream) else data.images[:1]
    n_classes = ensure_num_classes(model, as_float(first).to(model.device))
    top = int(data.labels.max())
    if top >= n_classes:
        raise DataError(
            f"labels go up to {top} but model {model.name} has {n_classes} classes; use data labelled for this model"
        )


def _host_prepare(device: torch.device, storage: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a CUDA device: the stream makes each batch's float pixels in pinned memory one batch
    ahead, in its background thread, so the copy to the device does not block. The float
    conversion stays on the CPU, exactly as in the eager path (same values)."""
    if device.type != "cuda":
        return None

    def prepare(u8: torch.Tensor) -> torch.Tensor:
        return as_float(clean_for_storage(u8, storage)).pin_memory()

    return prepare


def run_attack(
    model: LoadedModel,
    data: CleanSet | ImageStream,
    params: AttackParams,
    *,
    batch_size: int = 64,
    amp: str = "off",
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Attack every sample of ``data`` with ``model`` as the source; progress counts samples.

    ``data`` is a decoded CleanSet, or an :class:`ImageStream` whose images are
    still being decoded in the background: each batch is attacked as soon as it is
    decoded. Both give the same tensors and provenance.
    """
    if batch_size <= 0:
        raise ParameterError(f"--batch-size must be positive, got {batch_size}")
    device = model.device
    amp_dtype = resolve_amp(amp, device)
    check_labels(model, data)
    attack_fn = ATTACKS[params.attack]
    n = len(data)
    batches: Iterator[tuple[slice, torch.Tensor | None, torch.Tensor | None]]
    if isinstance(data, ImageStream):
        # uint8 storage is the decoded images themselves; float storage is filled batch by batch
        clean_store = data.images if params.storage == "uint8" else torch.empty(data.images.shape, dtype=STORAGE_DTYPES[params.storage])
        batches = data.batches(batch_size, _host_prepare(device, params.storage))
    else:
        clean_store = clean_for_storage(data.images, params.storage)
        batches = ((slice(s, min(s + batch_size, n)), None, None) for s in range(0, n, batch_size))
    adv_store = torch.empty_like(clean_store)
    source_correct = torch.empty(n, dtype=torch.bool)
    source_adv_correct = torch.empty(n, dtype=torch.bool)
    clean_logits: torch.Tensor | None = None  # kept: ensembles and accuracy need no second pass
    net = model.module
    done = 0
    if progress:
        progress(0, n)
    with contextlib.closing(batches):
        for sl, u8, host in batches:
            if u8 is not None and clean_store is not data.images:
                clean_store[sl] = clean_for_storage(u8, params.storage)
            x = host.to(device, non_blocking=True) if host is not None else as_float(clean_store[sl]).to(device)
            y = data.labels[sl].to(device)
            with torch.inference_mode():
                logits = net(x)
            model.check_finite(logits)
            if clean_logits is None:
                clean_logits = torch.empty((n, logits.shape[1]), dtype=torch.float32)
            clean_logits[sl] = logits.float().cpu()
            source_correct[sl] = (logits.argmax(1) == y).cpu()
            init = None
            if params.random_start and params.eps > 0:
                init = random_start_noise(data.ids[sl], tuple(x.shape[1:]), params.eps, params.seed).to(device)
            adv = attack_fn(net, x, y, eps=params.eps, steps=params.steps, alpha=params.alpha, init=init, amp_dtype=amp_dtype)
            stored = quantize_adv(adv.cpu(), clean_store[sl], params.eps, params.storage)
            adv_store[sl] = stored
            with torch.inference_mode():
                source_adv_correct[sl] = (net(as_float(stored).to(device)).argmax(1) == y).cpu()
            done = sl.stop
            if progress:
                progress(done, n)
    tensors = {
        "clean": clean_store,
        "adv": adv_store,
        "labels": data.labels.clone(),
        "ids": data.ids.clone(),
        "source_correct": source_correct,
        "source_adv_correct": source_adv_correct,
        "clean_logits": clean_logits,
    }
    prov: dict[str, Any] = {
        "command": "attack",
        "versions": versions(),
        "model": model.provenance(),
        "attack": params.to_dict(),
        "data": data_provenance(data),
        "storage_dtype": params.storage,
        "amp": amp,
        "batch_size": batch_size,  # kernels may sum in another order at another batch size: part of "same inputs"
    }
    prov["attack_key"] = attack_key(prov)
    res = AttackResult(tensors, prov)
    prov["stats"] = {"source_clean_accuracy": round(res.clean_accuracy, 6), "attack_success_rate": round(res.success_rate, 6)}
    return res


def attack_key(prov: dict[str, Any]) -> str:
    """Identity of an attack file's content: model weights, attack parameters, clean set, autocast (not versions)."""
    import hashlib

    core = {
        "model": {k: prov["model"].get(k) for k in ("name", "weights_id", "data_config")},
        "attack": prov["attack"],
        "data": prov["data"]["fingerprint"],
        "storage": prov["storage_dtype"],
    }
    if prov.get("amp", "off") != "off":  # other numerics, other adversarials (absent for full precision: keys stay stable)
        core["amp"] = prov["amp"]
    return hashlib.sha256(canonical_json(core).encode()).hexdigest()[:16]


def save_attack(result: AttackResult, path: str | Path, rerun: str | None = None) -> Path:
    prov = dict(result.provenance)
    if rerun:
        prov["rerun"] = rerun
    return write_satkit_file(path, ATTACK_FORMAT, result.tensors, prov)
