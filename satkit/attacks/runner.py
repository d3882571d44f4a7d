"""Run an attack over a clean set and store the result (library side of ``satkit attack``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
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
from satkit.formats.attack import AttackHeader, AttackSettings, AttackStats
from satkit.formats.attack import attack_key as attack_key  # re-exported: the key of a provenance dict
from satkit.formats.files import write_satkit_file
from satkit.formats.sections import DataInfo, ModelInfo
from satkit.io.pixels import pixels_on
from satkit.io.prefetch import ahead
from satkit.io.prefetch import pinned as _pinned
from satkit.models.registry import ensure_num_classes
from satkit.models.wrapper import LoadedModel
from satkit.provenance import ProgressFn, data_provenance, versions


@dataclass
class AttackResult:
    tensors: dict[str, torch.Tensor]
    header: AttackHeader

    @property
    def provenance(self) -> dict[str, Any]:
        """The header as the file stores it."""
        return self.header.to_dict()

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
    rows: torch.Tensor  # indices into the clean set
    clean: torch.Tensor  # the stored clean rows (storage dtype), pinned
    init: torch.Tensor | None  # the random start, or None


def _host_batches(data: CleanSet | ImageStream, clean_store: torch.Tensor, order: torch.Tensor, params: AttackParams,
                  batch_size: int, device: torch.device) -> Iterator[_HostBatch]:
    """Each attack batch's host work, one batch ahead in a background thread: gathering its rows
    (``order``, the samples to attack, cut into full batches), drawing its random start, pinning both.
    It overlaps the device's work on the previous batch; the values are the ones made in line."""

    def prepare(rows: torch.Tensor) -> _HostBatch:
        clean = clean_store[rows]
        init = None
        if params.random_start and params.eps > 0:
            init = _pinned(random_start_noise(data.ids[rows], tuple(clean.shape[1:]), params.eps, params.seed), device)
        return _HostBatch(rows, _pinned(clean, device), init)

    return ahead(prepare, (order[s:s + batch_size] for s in range(0, len(order), batch_size)))


@dataclass
class _DeviceBatch:
    """One attacked batch, its results on their way to the host."""

    rows: torch.Tensor
    adv_finite: torch.Tensor  # per sample
    stored: torch.Tensor  # the adversarials in the storage dtype
    adv_logits: torch.Tensor  # the model on the stored adversarials
    ready: Any = None  # a CUDA event recorded after the copies to the host


def _attack_batch(model: LoadedModel, attack_fn: Callable[..., torch.Tensor], hb: _HostBatch, ids: torch.Tensor,
                  y: torch.Tensor, params: AttackParams, amp_dtype: torch.dtype | None) -> _DeviceBatch:
    """Queue one batch's work on the device, ending with non-blocking copies of its results.

    The stored adversarials are evaluated under the attack's autocast, as clean images,
    transfer and logits are: the model whose correctness is recorded is the model attacked.
    """
    net, device = model.module, model.device
    clean = hb.clean.to(device, non_blocking=True)
    x = pixels_on(clean)
    init = hb.init.to(device, non_blocking=True) if hb.init is not None else None
    noise = SampleNoise(ids, params.seed, device)
    adv = attack_fn(net, x, y, eps=params.eps, steps=params.steps, alpha=params.alpha, init=init, amp_dtype=amp_dtype,
                    noise=noise, **params.option_values)
    adv_finite = torch.isfinite(adv).flatten(1).all(1)
    stored = quantize_adv(adv, clean, params.eps, params.storage)
    with torch.inference_mode(), model.autocast(amp_dtype):
        adv_logits = net(pixels_on(stored)).float()
    out = [t.to("cpu", non_blocking=True) for t in (adv_finite, stored, adv_logits)]
    ready = None
    if device.type == "cuda":
        ready = torch.cuda.Event()
        ready.record()
    return _DeviceBatch(hb.rows, *out, ready=ready)


def _clean_pass(model: LoadedModel, data: CleanSet | ImageStream, clean_store: torch.Tensor, storage: str,
                batch_size: int, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The source's float32 logits on every clean image; a stream's rows are stored as they are decoded."""
    n = len(data)
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if not isinstance(data, ImageStream):
        return model.predict_logits(clean_store, batch_size, amp_dtype)

    def read(b: tuple[int, int]) -> tuple[int, int, torch.Tensor]:
        rows = clean_for_storage(data.wait(*b), storage)
        if clean_store is not data.images:
            clean_store[b[0]:b[1]] = rows
        return b[0], b[1], _pinned(rows, model.device)

    return model.logits_of(ahead(read, bounds), n, amp_dtype)


def run_attack(
    model: LoadedModel,
    data: CleanSet | ImageStream,
    params: AttackParams,
    *,
    batch_size: int = 64,
    amp: str = "off",
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Attack the samples of ``data`` that ``model`` classifies correctly (all with ``params.attack_all``).

    The adversarial of a sample the source gets wrong is never read: no X_AB holds
    it, and ensembles and approx use clean logits. So after one clean pass only the
    correct samples are attacked, gathered into full batches across the whole set;
    the others are stored with their clean pixels as ``adv`` (``source_correct``
    marks them). Every sample's attack is seeded by its id, so a sample's adversarial
    does not depend on which others share its batch. Progress counts attacked samples.

    ``data`` is a decoded CleanSet, or an :class:`ImageStream` still being decoded
    in the background (the clean pass follows the decoding). Both give the same
    tensors and provenance. The device works on batch ``k + 1`` while the host files
    batch ``k``'s results (one sync per batch: NaN/inf in the adversarials or their
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
    labels = data.labels
    with model_numerics(device, amp) as numerics:
        clean_logits = _clean_pass(model, data, clean_store, params.storage, batch_size, amp_dtype)
        source_correct = clean_logits.argmax(1) == labels
        order = torch.arange(n) if params.attack_all else torch.nonzero(source_correct).flatten()
        # unattacked samples keep their clean pixels, so their "adversarial" class is the clean one
        adv_store = clean_store.clone()
        source_adv_pred = clean_logits.argmax(1)
        attacked = len(order)
        done = 0
        if progress:
            progress(0, attacked)

        def file_results(b: _DeviceBatch) -> None:
            nonlocal done
            if b.ready is not None:
                b.ready.synchronize()
            if not bool(b.adv_finite.all()):
                bad = int((~b.adv_finite).sum())
                hint = f" (under --amp {amp}: try --amp off)" if amp != "off" else ""
                raise ModelError(f"model {model.name} produced NaN/inf gradients or adversarial images on {bad} sample(s) "
                                 f"during the attack{hint}; check its weights and input scaling")
            model.check_finite(b.adv_logits)
            adv_store[b.rows] = b.stored
            source_adv_pred[b.rows] = b.adv_logits.argmax(1)
            done += len(b.rows)
            if progress:
                progress(done, attacked)

        batches = _host_batches(data, clean_store, order, params, batch_size, device)
        with contextlib.closing(batches):
            labels_on_device, ids_on_device = labels.to(device), data.ids.to(device)
            pending: _DeviceBatch | None = None
            for hb in batches:
                rows = hb.rows.to(device)
                queued = _attack_batch(model, attack_fn, hb, ids_on_device[rows], labels_on_device[rows], params, amp_dtype)
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
        "source_adv_correct": source_adv_pred == labels,
        "source_adv_pred": source_adv_pred,  # the wrong class each adversarial lands in (same-class rates)
        "clean_logits": clean_logits,
    }
    header = AttackHeader(
        command="attack",
        versions=versions(),
        model=ModelInfo.parse(model.provenance()),
        attack=AttackSettings.parse(params.to_dict()),
        data=DataInfo.parse(data_provenance(data)),
        storage_dtype=params.storage,
        amp=amp,
        batch_size=batch_size,  # kernels may sum in another order at another batch size: part of "same inputs"
        numerics=numerics,
    ).keyed()
    res = AttackResult(tensors, header)
    res.header = replace(header, stats=AttackStats(source_clean_accuracy=round(res.clean_accuracy, 6),
                                                   attack_success_rate=round(res.success_rate, 6), attacked=attacked))
    return res


def save_attack(result: AttackResult, path: str | Path, rerun: str | None = None) -> Path:
    header = replace(result.header, rerun=rerun) if rerun else result.header
    return write_satkit_file(path, header, result.tensors)
