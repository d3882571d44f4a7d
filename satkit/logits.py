"""Clean logits of one model over a clean set (library side of ``satkit logits``).

A logits file (format ``satkit.logits``, version 1) holds, for the same sample
an attack file would use (same ``--data``/``--n``/``--data-seed``/``--canvas``,
hence the same data fingerprint):

- ``logits``: float32 (N, C), the model's raw outputs on the clean images
- ``labels``: int64 (N,), ``ids``: int64 (N,)
- ``clean``: uint8 (N, C_img, H, W), the clean images, so the file also works
  as ``--data`` (its clean set is reused exactly); left out with
  ``store_images=False`` (5,000 ImageNet images are 750 MB per file)

Provenance: :class:`satkit.formats.logits.LogitsHeader` (``command``, ``versions``, ``model``
as in attack files, ``data``: source, fingerprint, n, ..., ``amp``, ``numerics``: device, GPU,
CUDA/cuDNN, TF32 and determinism settings, ``stats``: top-1 accuracy). :func:`open_logits_files`
reads several files and refuses to combine files made from different clean sets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from satkit.attacks.runner import check_labels
from satkit.data.base import CleanSet
from satkit.devices import model_numerics, resolve_amp
from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.formats.files import read_satkit_file, write_satkit_file
from satkit.formats.logits import FORMAT as LOGITS_FORMAT
from satkit.formats.logits import LogitsHeader
from satkit.formats.sections import DataInfo, ModelInfo
from satkit.models.wrapper import LoadedModel
from satkit.provenance import ProgressFn, data_provenance, versions


@dataclass
class LogitsResult:
    tensors: dict[str, torch.Tensor]
    header: LogitsHeader

    @property
    def provenance(self) -> dict[str, Any]:
        """The header as the file stores it."""
        return self.header.to_dict()

    @property
    def accuracy(self) -> float:
        t = self.tensors
        if len(t["labels"]) == 0:
            return float("nan")
        return float((t["logits"].argmax(1) == t["labels"]).float().mean())


def compute_logits(
    model: LoadedModel,
    data: CleanSet,
    *,
    batch_size: int = 256,
    amp: str = "off",
    store_images: bool = True,
    progress: ProgressFn | None = None,
) -> LogitsResult:
    """Clean logits of ``model`` on every sample of ``data``; progress counts samples.

    NaN/inf logits raise :class:`ModelError`.
    """
    if batch_size <= 0:
        raise ParameterError(f"--batch-size must be positive, got {batch_size}")
    amp_dtype = resolve_amp(amp, model.device)
    check_labels(model, data)
    if progress:
        progress(0, len(data))
    with model_numerics(model.device, amp) as numerics:
        out = model.predict_logits(data.images, batch_size, amp_dtype, progress)
    tensors = {"logits": out, "labels": data.labels.clone(), "ids": data.ids.clone()}
    if store_images:
        tensors["clean"] = data.images.clone()
    header = LogitsHeader(command="logits", versions=versions(), model=ModelInfo.parse(model.provenance()),
                          data=DataInfo.parse(data_provenance(data)), amp=amp, numerics=numerics)
    res = LogitsResult(tensors, header)
    res.header = replace(header, clean_accuracy=round(res.accuracy, 6))
    return res


def logits_from_attack(path: str | Path) -> LogitsResult:
    """The source model's clean logits stored in an attack file, as a logits result (no model run)."""
    f = read_satkit_file(path, "satkit.attack")
    a = f.header
    header = LogitsHeader(command="logits", versions=a.versions, model=a.model, data=a.data, amp=a.amp,
                          numerics=a.numerics, from_attack=a.attack_key)
    res = LogitsResult({"logits": f.get("clean_logits"), "labels": f.get("labels"), "ids": f.get("ids")}, header)
    res.header = replace(header, clean_accuracy=round(res.accuracy, 6))
    return res


def save_logits(result: LogitsResult, path: str | Path, rerun: str | None = None) -> Path:
    header = replace(result.header, rerun=rerun) if rerun else result.header
    return write_satkit_file(path, header, result.tensors)


@dataclass
class Logits:
    """One logits file, loaded: numpy arrays, the model name and the data fingerprint."""

    name: str
    path: Path
    logits: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,)
    ids: np.ndarray  # int64 (N,)
    fingerprint: str
    header: LogitsHeader

    @property
    def provenance(self) -> dict[str, Any]:
        """The header as the file stores it."""
        return self.header.to_dict()

    @property
    def error(self) -> float:
        """Top-1 error in percent."""
        return top1_error(self.logits, self.labels)


def top1_error(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 error in percent (ties resolved by the first maximal class, like argmax)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) != labels))


def read_logits(path: str | Path) -> Logits:
    f = read_satkit_file(path, LOGITS_FORMAT)
    for key in ("logits", "labels", "ids"):
        if key not in f.keys:
            raise InputFileError(f"{f.path}: tensor '{key}' is missing; the file is incomplete")
    h: LogitsHeader = f.header  # its checks: a model name and a data fingerprint are there
    logits = f.get("logits").to(torch.float32).numpy()
    labels = f.get("labels").to(torch.int64).numpy()
    ids = f.get("ids").to(torch.int64).numpy()
    if logits.ndim != 2 or logits.shape[0] != len(labels) or len(ids) != len(labels):
        raise InputFileError(f"{f.path}: logits {logits.shape}, labels {labels.shape}, ids {ids.shape} do not fit; the file is damaged")
    if not np.all(np.isfinite(logits)):
        raise InputFileError(f"{f.path}: holds NaN/inf logits; remake it with `satkit logits`")
    return Logits(name=str(h.model.name), path=f.path, logits=logits, labels=labels, ids=ids,
                  fingerprint=str(h.data.fingerprint), header=h)


def open_logits_files(paths: Iterable[str | Path]) -> list[Logits]:
    """Read logits files and check they can be combined.

    All must come from the same clean set (equal fingerprints, sample ids and
    labels) and have the same number of classes; each model may appear once.
    """
    files = [read_logits(p) for p in paths]
    if not files:
        raise InputFileError("no logits files given")
    ref = files[0]
    for f in files[1:]:
        if f.fingerprint != ref.fingerprint or not np.array_equal(f.ids, ref.ids):
            raise MismatchError(
                f"{f.path} and {ref.path} were made from different clean sets (fingerprints {f.fingerprint[:8]} vs "
                f"{ref.fingerprint[:8]}); run `satkit logits` for every model with the same --data/--n/--data-seed"
            )
        if not np.array_equal(f.labels, ref.labels):
            raise MismatchError(f"{f.path}: labels differ from {ref.path} although the samples match; the file is damaged")
        if f.logits.shape[1] != ref.logits.shape[1]:
            raise MismatchError(
                f"{f.path} has {f.logits.shape[1]} classes but {ref.path} has {ref.logits.shape[1]}; "
                "ensembles need models over the same label set"
            )
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise MismatchError(f"{seen[f.name]} and {f.path} are both logits of model {f.name}; give each model once")
        seen[f.name] = f.path
    return files
