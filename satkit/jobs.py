"""The work every command shares, written once.

- :func:`attack_into_file`: attack one model on a clean set into an attack file
  (``satkit attack``, the study's attack wave, ``satkit approx``'s new model).
- :func:`evaluate_target`: one target model on attack files -> transfer counts
  (``satkit transfer``, the study's transfer wave, ``satkit approx``'s known models).
- :func:`logits_into_file`: one model's clean logits into a logits file (``satkit logits``).
- :func:`attack_is_current`: whether a stored attack file answers a request, the
  one rule behind every reuse (study resume, ``--plan``, approx's leave-one-out).

Every model passes :func:`satkit.models.fit.check_fits` before any work, every
output passes the io gate (never over an input, never half-written).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.attacks.shards import attack_shard
from satkit.data import CleanSet, DataRequest, FolderImages, ImageStream, default_eps
from satkit.data.stream import default_workers
from satkit.errors import ParameterError, SatkitError
from satkit.formats.attack import AttackHeader, AttackRequest
from satkit.formats.files import SatkitFile, read_satkit_file
from satkit.io.atomic import check_outputs
from satkit.logits import compute_logits, save_logits
from satkit.models import LoadedModel, ModelOptions, load_model
from satkit.models.batching import default_batch_size, resolve_batch_size
from satkit.models.fit import check_fits
from satkit.models.registry import expected_weights_id, model_display_name, prepare_model
from satkit.provenance import ProgressFn
from satkit.transfer import TransferResult, run_transfer

# One batch size for every command: the attack file made by `satkit attack` equals the
# study's for the same model and settings (kernels may sum in another order at another size).
# None: the device's default, satkit.models.batching.default_batch_size (auto on CUDA, 128 elsewhere).
DEFAULT_BATCH_SIZE = None


@dataclass(frozen=True)
class AttackJob:
    """One model attacked on one clean set; picklable (it travels to worker processes and Ray tasks)."""

    model: str
    data: DataRequest = field(default_factory=DataRequest)
    params: AttackParams | None = None  # None: the data source's default budget, PGD defaults otherwise
    model_options: ModelOptions | None = None
    batch_size: int | str | None = DEFAULT_BATCH_SIZE  # or "auto"
    amp: str = "off"
    compile: bool = False
    shard: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return model_display_name(self.model, self.model_options)

    def resolved_params(self) -> AttackParams:
        return self.params if self.params is not None else AttackParams(eps=default_eps(self.data.source))


@dataclass
class AttackOutcome:
    path: Path
    name: str
    ran: bool  # False: a current file was reused
    header: AttackHeader
    model_loads: int = 0
    forward_samples: int = 0  # images through the source: 1 per sample (clean) + gradients + 1 per attacked sample
    seconds: float = 0.0

    @property
    def stats(self) -> dict[str, float]:
        """The attack's stats as a plain dict (a study's job report carries it)."""
        return self.header.stats.to_dict() if self.header.stats is not None else {}

    @property
    def n(self) -> int:
        return int(self.header.data.n or 0)


def attack_is_current(path: str | Path, *, name: str, weights_id: str | None, params: AttackParams,
                      fingerprint: str, amp: str = "off") -> AttackHeader | None:
    """The header of the attack file at ``path`` if it answers this request (:meth:`AttackHeader.answers`), else None.

    A missing, damaged or foreign file answers nothing: redo.
    """
    p = Path(path)
    if weights_id is None or not p.is_file():
        return None
    req = AttackRequest(name=name, weights_id=weights_id, attack=params.to_dict(), storage=params.storage,
                        fingerprint=fingerprint, amp=amp)
    try:
        h = read_satkit_file(p, "satkit.attack", verify=False).header  # a peek; the file is verified when used
    except SatkitError:
        return None
    return h if h.answers(req) else None


def _open_source(job: AttackJob, clean: CleanSet | None, stack: contextlib.ExitStack, device: torch.device):
    if clean is not None:
        return clean
    # a shard's provenance names the whole clean set (its fingerprint): decode all, attack a slice
    src = job.data.load() if job.shard is not None else job.data.open()
    if isinstance(src, FolderImages):  # decode in background threads during model build and attack
        src = stack.enter_context(src.stream(workers=default_workers(busy_device=device.type == "cpu")))
    return src


def attack_into_file(
    job: AttackJob,
    out: str | Path,
    *,
    device: torch.device | str = "cpu",
    clean: CleanSet | None = None,
    reuse: bool = False,
    rerun: str | None = None,
    progress: ProgressFn | None = None,
) -> AttackOutcome:
    """Attack ``job.model`` on ``job.data`` (or the already loaded ``clean``) into the attack file ``out``.

    With ``reuse``, a file at ``out`` that :func:`attack_is_current` accepts is kept
    and nothing runs. ``out`` may be ``-`` (stdout).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    params = job.resolved_params()
    if job.shard is not None and job.batch_size == "auto":
        raise ParameterError("--shard needs a fixed --batch-size (every shard must cut the data into the same batches)")
    batch_size = job.batch_size if job.batch_size is not None else default_batch_size(device, fixed=job.shard is not None)
    model_file = Path(job.model) if Path(job.model).is_file() else None
    check_outputs({"output": out}, inputs=[model_file, *job.data.inputs()])
    if reuse:
        clean = clean if clean is not None else job.data.load()
        current = attack_is_current(out, name=job.name, weights_id=expected_weights_id(job.model, job.model_options),
                                    params=params, fingerprint=clean.fingerprint, amp=job.amp)
        if current is not None:
            return AttackOutcome(Path(out), job.name, ran=False, header=current)
    with contextlib.ExitStack() as stack:
        src = _open_source(job, clean, stack, device)
        lm = prepare_model(load_model(job.model, job.model_options, device), compile=job.compile)
        first = src.wait(0, min(2, len(src))) if isinstance(src, ImageStream) else src.images[:2]
        check_fits(lm, first, src.num_classes, src.source)
        bs = resolve_batch_size(batch_size, lm, first[:1], kind="attack", n=len(src), amp=job.amp)
        if job.shard is not None:
            res = attack_shard(lm, src, params, job.shard, batch_size=bs, amp=job.amp, progress=progress)
        else:
            res = run_attack(lm, src, params, batch_size=bs, amp=job.amp, progress=progress)
    save_attack(res, out, rerun=rerun)
    attacked = res.header.stats.attacked
    return AttackOutcome(Path(out), lm.name, ran=True, header=res.header, model_loads=1,
                         forward_samples=len(res.tensors["labels"]) + attacked * (params.gradients_per_sample + 1),
                         seconds=time.perf_counter() - t0)


@dataclass
class TargetOutcome:
    name: str
    weights_id: str
    result: TransferResult
    own_attack_used: bool  # the target's clean correctness came from its own attack file (no clean pass)


def evaluate_target(
    spec: str,
    files: list[SatkitFile],
    *,
    model_options: ModelOptions | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | str | None = DEFAULT_BATCH_SIZE,
    amp: str = "off",
    compile: bool = False,
    per_sample: bool = False,
    own_attack: SatkitFile | None = None,
    progress: ProgressFn | None = None,
) -> TargetOutcome:
    """Load target ``spec`` once and evaluate it on every attack file (opened with ``open_attack_files``).

    ``own_attack`` is the target's own attack file on the same clean set, whose
    stored clean correctness saves a clean pass; it is used only when its model
    name and weights are the target's.
    """
    if not files:
        raise ParameterError("no attack files to evaluate the target on")
    lm = prepare_model(load_model(spec, model_options, device), compile=compile)
    ref = files[0]
    sample = ref.head("clean", 2)
    data = ref.header.data
    check_fits(lm, sample, int(data.num_classes), str(data.source if data.source is not None else ref.path))
    bs = resolve_batch_size(batch_size, lm, sample[:1], kind="transfer", n=int(data.n), amp=amp)
    own = own_attack if own_attack is not None and _made_by(own_attack, lm) else None
    res = run_transfer(lm, files, batch_size=bs, amp=amp, per_sample=per_sample, own_attack=own, progress=progress)
    return TargetOutcome(lm.name, lm.weights_id, res, own_attack_used=own is not None)


def _made_by(f: SatkitFile, lm: LoadedModel) -> bool:
    return f.header.model.same_weights(lm.name, lm.weights_id)


__all__ = [
    "DEFAULT_BATCH_SIZE", "AttackJob", "AttackOutcome", "TargetOutcome",
    "attack_into_file", "attack_is_current", "evaluate_target", "logits_into_file",
]


def logits_into_file(
    model: str,
    out: str | Path,
    *,
    data: DataRequest = DataRequest(),
    model_options: ModelOptions | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | str | None = DEFAULT_BATCH_SIZE,
    amp: str = "off",
    store_images: bool = True,
    rerun: str | None = None,
    progress: ProgressFn | None = None,
):
    """Clean logits of ``model`` on ``data`` into a logits file ``out`` (``satkit logits``)."""
    model_file = Path(model) if Path(model).is_file() else None
    check_outputs({"output": out}, inputs=[model_file, *data.inputs()])
    clean = data.load()
    lm = load_model(model, model_options, device)
    check_fits(lm, clean.images[:2], clean.num_classes, clean.source)
    bs = resolve_batch_size(batch_size, lm, clean.images[:1], kind="transfer", n=len(clean), amp=amp)
    res = compute_logits(lm, clean, batch_size=bs, amp=amp, store_images=store_images, progress=progress)
    save_logits(res, out, rerun=rerun)
    return res
