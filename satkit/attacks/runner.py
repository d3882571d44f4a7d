"""Run an attack over a clean set and store the result (library side of ``satkit attack``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from satkit.attacks.base import ATTACKS, AttackParams
from satkit.attacks.noise import SampleNoise
from satkit.attacks.quantize import STORAGE_DTYPES, as_float, clean_for_storage, quantize_adv
from satkit.data.base import CleanSet
from satkit.data.stream import ImageStream
from satkit.devices import model_numerics, resolve_amp
from satkit.errors import DataError, ModelError, ParameterError
from satkit.io.pixels import pixels_on
from satkit.io.prefetch import ahead
from satkit.io.prefetch import pinned as _pinned
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
        torch.rand(shape, generator=g, out=out[j])
    # one scaling op per batch, not per sample (the same values: it is elementwise); small per-sample
    # ops stall when the cores are busy (0.33-4.7 s instead of 0.21 s for 256 ImageNet images here)
    return out.mul_(2 * eps).sub_(eps)


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


@dataclass
class _HostBatch:
    sl: slice
    ids: torch.Tensor
    clean: torch.Tensor  # the stored clean rows (storage dtype)
    init: torch.Tensor | None  # the random start, or None


def _host_batches(data: CleanSet | ImageStream, clean_store: torch.Tensor, params: AttackParams, batch_size: int,
                  device: torch.device) -> Iterator[_HostBatch]:
    """Each batch's host work, one batch ahead in a background thread: waiting for its decoded
    rows, converting them to the storage dtype, drawing its random start, pinning both.
    It overlaps the device's work on the previous batch; the values are the ones made in line."""
    n = len(data)
    stream = isinstance(data, ImageStream)

    def prepare(sl: slice) -> _HostBatch:
        if stream:
            clean = clean_for_storage(data.wait(sl.start, sl.stop), params.storage)
        else:
            clean = clean_store[sl]
        init = None
        if params.random_start and params.eps > 0:
            init = _pinned(random_start_noise(data.ids[sl], tuple(clean.shape[1:]), params.eps, params.seed), device)
        return _HostBatch(sl, data.ids[sl], _pinned(clean, device), init)

    return ahead(prepare, (slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)))


@dataclass
class _DeviceBatch:
    """One attacked batch, its results on their way to the host."""

    sl: slice
    clean_logits: torch.Tensor
    adv_finite: torch.Tensor  # per sample
    stored: torch.Tensor  # the adversarials in the storage dtype
    adv_logits: torch.Tensor  # the model on the stored adversarials
    ready: Any = None  # a CUDA event recorded after the copies to the host


def _attack_batch(model: LoadedModel, attack_fn: Callable[..., torch.Tensor], hb: _HostBatch, y: torch.Tensor,
                  params: AttackParams, amp_dtype: torch.dtype | None) -> _DeviceBatch:
    """Queue one batch's work on the device, ending with non-blocking copies of its results.

    Every evaluation (clean, adversarial) runs under the attack's autocast, as transfer
    and logits do: the model whose correctness is recorded is the model attacked.
    """
    net, device = model.module, model.device
    clean = hb.clean.to(device, non_blocking=True)
    x = pixels_on(clean)
    with torch.inference_mode(), model.autocast(amp_dtype):
        clean_logits = net(x).float()
    init = hb.init.to(device, non_blocking=True) if hb.init is not None else None
    noise = SampleNoise(hb.ids, params.seed, device)
    adv = attack_fn(net, x, y, eps=params.eps, steps=params.steps, alpha=params.alpha, init=init, amp_dtype=amp_dtype,
                    noise=noise, **params.option_values)
    adv_finite = torch.isfinite(adv).flatten(1).all(1)
    stored = quantize_adv(adv, clean, params.eps, params.storage)
    with torch.inference_mode(), model.autocast(amp_dtype):
        adv_logits = net(pixels_on(stored)).float()
    out = [t.to("cpu", non_blocking=True) for t in (clean_logits, adv_finite, stored, adv_logits)]
    ready = None
    if device.type == "cuda":
        ready = torch.cuda.Event()
        ready.record()
    return _DeviceBatch(hb.sl, *out, ready=ready)


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

    The device works on batch ``k + 1`` while the host files batch ``k``'s results
    (one sync per batch: NaN/inf in the clean logits, the adversarials or their
    logits is a :class:`ModelError` naming the model).
    """
    if batch_size <= 0:
        raise ParameterError(f"--batch-size must be positive, got {batch_size}")
    device = model.device
    amp_dtype = resolve_amp(amp, device)
    check_labels(model, data)
    attack_fn = ATTACKS[params.attack].fn
    n = len(data)
    if isinstance(data, ImageStream):
        # uint8 storage is the decoded images themselves; float storage is filled batch by batch
        clean_store = data.images if params.storage == "uint8" else torch.empty(data.images.shape, dtype=STORAGE_DTYPES[params.storage])
    else:
        clean_store = clean_for_storage(data.images, params.storage)
    adv_store = torch.empty_like(clean_store)
    labels = data.labels
    source_correct = torch.empty(n, dtype=torch.bool)
    source_adv_correct = torch.empty(n, dtype=torch.bool)
    source_adv_pred = torch.empty(n, dtype=torch.int64)  # the wrong class each adversarial lands in (same-class rates)
    clean_logits: torch.Tensor | None = None  # kept: ensembles and accuracy need no second pass
    if progress:
        progress(0, n)

    def file_results(b: _DeviceBatch) -> None:
        nonlocal clean_logits
        if b.ready is not None:
            b.ready.synchronize()
        model.check_finite(b.clean_logits)
        if not bool(b.adv_finite.all()):
            bad = int((~b.adv_finite).sum())
            hint = f" (under --amp {amp}: try --amp off)" if amp != "off" else ""
            raise ModelError(f"model {model.name} produced NaN/inf gradients or adversarial images on {bad} sample(s) "
                             f"during the attack{hint}; check its weights and input scaling")
        model.check_finite(b.adv_logits)
        sl = b.sl
        if clean_logits is None:
            clean_logits = torch.empty((n, b.clean_logits.shape[1]), dtype=torch.float32)
        clean_logits[sl] = b.clean_logits
        source_correct[sl] = b.clean_logits.argmax(1) == labels[sl]
        adv_store[sl] = b.stored
        source_adv_pred[sl] = b.adv_logits.argmax(1)
        source_adv_correct[sl] = source_adv_pred[sl] == labels[sl]
        if progress:
            progress(sl.stop, n)

    batches = _host_batches(data, clean_store, params, batch_size, device)
    with model_numerics(device, amp) as numerics, contextlib.closing(batches):
        labels_on_device = labels.to(device)
        pending: _DeviceBatch | None = None
        for hb in batches:
            if isinstance(data, ImageStream) and clean_store is not data.images:
                clean_store[hb.sl] = hb.clean
            queued = _attack_batch(model, attack_fn, hb, labels_on_device[hb.sl], params, amp_dtype)
            if pending is not None:
                file_results(pending)
            pending = queued
        if pending is not None:
            file_results(pending)
    tensors = {
        "clean": clean_store,
        "adv": adv_store,
        "labels": data.labels.clone(),
        "ids": data.ids.clone(),
        "source_correct": source_correct,
        "source_adv_correct": source_adv_correct,
        "source_adv_pred": source_adv_pred,
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
        "numerics": numerics,
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
