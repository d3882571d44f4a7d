"""Knowledge distillation and SAT (paper section 5.2, appendix F).

Training a student (:func:`distill`). The student is trained from scratch with
the digits-zoo recipe of its architecture (AdamW, linear warm-up + cosine
decay, +/-1 px random shifts, batch 64; see :mod:`satkit.models.zoo`) by the
zoo's training loop, :func:`satkit.models.train.fit`. Per batch
the teacher (frozen, eval mode, ``torch.no_grad``) sees the same augmented
canvas pixels as the student; each model resizes/normalizes through its own
preprocessing (the satkit wrapper), so different input sizes just work -- the
paper resizes the input to the size the teacher needs in the same way.

Losses, with ``a = alpha`` (default 0.5), ``CE_ls`` cross-entropy with the
recipe's label smoothing (0.1, as in the zoo and in DeiT) on the true label::

    no teacher:     CE_ls(s, y)
    hard (DeiT):    (1 - a) * CE_ls(s, y) + a * CE(s, argmax t)          # a = 0.5: 0.5 / 0.5
    soft (Hinton):  (1 - a) * CE_ls(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))

Everything is seeded: ``seed`` fixes the student's initialization (global RNG,
restored afterwards) and the data order / augmentation (private generator).
The teacher's weights are never changed (it is frozen and only run under
``no_grad``).

SAT(teacher, student). The student being trained is not in a SAT matrix, so
the matrix is searched for, in order: an explicit proxy (``sat_proxy``, the
paper used DeiT-S for its DeiT-Ti student), the student's own name, and -- for a
zoo-architecture student such as ``digits/vit`` -- the matrix's trained models
of that architecture other than the teacher (``digits/vit-s1``, ...), whose
SAT to the teacher is averaged.

Choosing a teacher (:func:`recommend_teachers`, paper 5.2). The paper finds
that when teacher and student have a *different* base architecture (model card
"Base architecture"; compared as exact strings), a more dissimilar teacher
(lower SAT) distills better (a stronger regularizer, Fig. 11c); with the *same*
base architecture a more similar teacher (higher SAT) is better (easier to
follow, Fig. 11b); and overall the best results came from a significantly
different teacher. Ranking: first every different-base-architecture candidate
by SAT ascending, then every same-base-architecture candidate by SAT
descending, then candidates without a model card by SAT ascending; ties by
name.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from satkit.data.base import CleanSet
from satkit.errors import DataError, ModelError, ParameterError
from satkit.models.wrapper import DataConfig, LoadedModel
from satkit.provenance import ProgressFn

ZOO_PREFIX = "digits/"


@dataclass
class DistillConfig:
    """Training settings; ``None`` means the zoo recipe of the student's architecture."""

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    max_shift: int | None = None
    soft: bool = False
    temperature: float = 3.0
    alpha: float = 0.5
    seed: int = 0

    def check(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ParameterError(f"--epochs must be at least 1, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ParameterError(f"--lr must be positive, got {self.lr}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ParameterError(f"--batch-size must be positive, got {self.batch_size}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ParameterError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ParameterError(f"--temperature must be positive, got {self.temperature}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ParameterError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class StudentArch:
    """What the student is: a zoo architecture or a timm architecture, built untrained."""

    name: str  # "digits/vit" or a timm name
    kind: str  # "zoo" | "timm"
    build: Callable[[], nn.Module]
    data_config: DataConfig
    recipe: Any  # satkit.models.zoo.TrainRecipe
    card: dict[str, str] | None = None
    zoo_arch: str | None = None  # "vit" for digits/vit


def resolve_student(spec: str, num_classes: int = 10) -> StudentArch:
    """``digits/<arch>`` (or a zoo model name, meaning its architecture) or a timm architecture, from scratch."""
    from satkit.models import zoo

    s = spec.strip()
    key = s.removeprefix(ZOO_PREFIX)
    if key in zoo.ZOO_ARCHS or key in zoo.ZOO_MODELS:
        arch = zoo.ZOO_ARCHS[key] if key in zoo.ZOO_ARCHS else zoo.ZOO_ARCHS[zoo.ZOO_MODELS[key].arch]
        if num_classes != zoo.NUM_CLASSES:
            raise DataError(f"zoo architectures have {zoo.NUM_CLASSES} classes but the data has {num_classes}; use a timm architecture")
        return StudentArch(name=ZOO_PREFIX + arch.name, kind="zoo", build=arch.build, data_config=arch.data_config,
                           recipe=arch.recipe, card=dict(arch.card), zoo_arch=arch.name)
    if s.startswith(ZOO_PREFIX):
        raise ModelError(f"unknown zoo architecture '{spec}'; use one of {', '.join(ZOO_PREFIX + a for a in zoo.ZOO_ARCHS)}")
    import timm

    arch_name = s.split(".", 1)[0]
    if not timm.is_model(arch_name):
        raise ModelError(f"unknown student '{spec}': not a zoo architecture ({', '.join(ZOO_PREFIX + a for a in zoo.ZOO_ARCHS)}) or a timm architecture")

    def build() -> nn.Module:
        return timm.create_model(arch_name, pretrained=False, num_classes=num_classes)

    import timm.data

    probe = build()
    cfg = DataConfig.from_timm(timm.data.resolve_model_data_config(probe))
    del probe
    return StudentArch(name=arch_name, kind="timm", build=build, data_config=cfg, recipe=zoo.TrainRecipe(epochs=20, lr=1e-3))


@dataclass
class DistillResult:
    state_dict: dict[str, torch.Tensor]
    student: StudentArch
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


class _TeacherTerm:
    """The teacher's term of the student's loss (module docstring); counts student/teacher agreement."""

    def __init__(self, teacher: LoadedModel, soft: bool, temperature: float):
        self.teacher, self.soft, self.T = teacher, soft, temperature
        # counts stay on the device and are read once per epoch (check, take_agreement): reading
        # them per step would sync a GPU with the host at every training step
        self.agree: torch.Tensor | int = 0
        self.finite: torch.Tensor | None = None
        self.seen = 0

    def __call__(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = self.teacher.module(x).float()
        ok = torch.isfinite(t_logits).all()
        self.finite = ok if self.finite is None else self.finite & ok
        T = self.T
        if self.soft:
            kd = F.kl_div(F.log_softmax(logits / T, dim=1), F.log_softmax(t_logits / T, dim=1),
                          reduction="batchmean", log_target=True) * (T * T)
        else:
            kd = F.cross_entropy(logits, t_logits.argmax(1))
        self.agree = self.agree + (logits.argmax(1) == t_logits.argmax(1)).sum()
        self.seen += len(x)
        return kd

    def check(self) -> None:
        """The teacher's NaN/inf logits since the last call, as the ModelError that names it."""
        if self.finite is not None and not bool(self.finite):
            raise ModelError(f"model {self.teacher.name} produced NaN/inf logits during distillation; "
                             "check its weights and input scaling")

    def take_agreement(self) -> float:
        """Agreement since the last call, then start counting afresh."""
        value = int(self.agree) / self.seen if self.seen else float("nan")
        self.agree, self.finite, self.seen = 0, None, 0
        return value


def distill(
    teacher: LoadedModel | None,
    student: str | StudentArch,
    train: CleanSet,
    test: CleanSet,
    config: DistillConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> DistillResult:
    """Train ``student`` on ``train`` (distilling from ``teacher`` unless None); evaluate on ``test``.

    ``progress(done, total)`` counts epochs; ``on_epoch`` gets a dict per epoch
    (epoch, loss, train_accuracy, teacher_agreement, test_accuracy).
    """
    from satkit.attacks.runner import check_labels
    from satkit.models.train import accuracy, fit, predict

    cfg = config or DistillConfig()
    cfg.check()
    if len(train) == 0 or len(test) == 0:
        raise DataError("training and test data must not be empty")
    if train.canvas != test.canvas:
        raise DataError(f"training canvas {train.canvas} differs from test canvas {test.canvas}; use one --canvas")
    num_classes = max(train.num_classes, int(train.labels.max()) + 1)
    arch = student if isinstance(student, StudentArch) else resolve_student(student, num_classes)
    if teacher is not None:
        check_labels(teacher, train)
        teacher.module.eval()
        for p in teacher.module.parameters():
            p.requires_grad_(False)
    r = arch.recipe
    epochs = cfg.epochs if cfg.epochs is not None else r.epochs
    lr = cfg.lr if cfg.lr is not None else r.lr
    bs = cfg.batch_size if cfg.batch_size is not None else r.batch_size
    wd = cfg.weight_decay if cfg.weight_decay is not None else r.weight_decay
    ls = cfg.label_smoothing if cfg.label_smoothing is not None else r.label_smoothing
    shift = cfg.max_shift if cfg.max_shift is not None else r.max_shift
    mode = "none" if teacher is None else ("soft" if cfg.soft else "hard")
    a, T = cfg.alpha, cfg.temperature
    dev = teacher.device if teacher is not None else torch.device("cpu")

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = arch.build()
    term = _TeacherTerm(teacher, cfg.soft, T) if teacher is not None else None

    def epoch_stats(module: nn.Module) -> dict[str, float]:
        test_pred = predict(module, arch.data_config, test.images, device=dev)
        return {"teacher_agreement": term.take_agreement() if term is not None else float("nan"),
                "test_accuracy": accuracy(test_pred, test.labels)}

    if progress:
        progress(0, epochs)
    history = fit(
        model, arch.data_config, train.images, train.labels, epochs=epochs, lr=lr, batch_size=bs, seed=cfg.seed,
        weight_decay=wd, label_smoothing=ls, max_shift=shift, warmup_epochs=r.warmup_epochs, device=dev,
        extra_loss=term, extra_weight=a, epoch_stats=epoch_stats, on_epoch=on_epoch, progress=progress,
    )
    seconds = time.perf_counter() - t0
    model.to("cpu")
    s_pred = predict(model, arch.data_config, test.images)
    metrics: dict[str, Any] = {
        "teacher": teacher.name if teacher is not None else "none",
        "student_arch": arch.name,
        "mode": mode,
        "student_accuracy": accuracy(s_pred, test.labels),
        "teacher_accuracy": None,
        "teacher_student_agreement": None,
        "epochs": epochs,
        "seed": cfg.seed,
        "alpha": a if teacher is not None else None,
        "temperature": T if mode == "soft" else None,
        "train_seconds": seconds,
        "n_train": len(train),
        "n_test": len(test),
    }
    if teacher is not None:
        t_pred = teacher.predict_logits(test.images, batch_size=512).argmax(1)
        metrics["teacher_accuracy"] = accuracy(t_pred, test.labels)
        metrics["teacher_student_agreement"] = accuracy(s_pred, t_pred)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    prov = {
        "command": "distill",
        "student": {"arch": arch.name, "kind": arch.kind, "data_config": arch.data_config.to_dict()},
        "teacher": teacher.provenance() if teacher is not None else None,
        "config": {**asdict(cfg), "epochs": epochs, "lr": lr, "batch_size": bs, "weight_decay": wd,
                   "label_smoothing": ls, "max_shift": shift, "mode": mode},
        "train_data": {"source": train.source, "fingerprint": train.fingerprint, "n": len(train)},
        "test_data": {"source": test.source, "fingerprint": test.fingerprint, "n": len(test)},
        "metrics": {k: v for k, v in metrics.items() if k != "train_seconds"},
    }
    return DistillResult(state_dict=state, student=arch, metrics=metrics, history=history, provenance=prov)


def save_student(result: DistillResult, path) -> None:
    """Student weights as a plain safetensors state dict (load with ``--arch <student arch>``), atomically."""
    from safetensors.torch import save_file

    from satkit.io.atomic import atomic_output
    from satkit.io.tensorfile import canonical_json
    from satkit.provenance import versions

    meta = {"satkit_distill": canonical_json({**result.provenance, "versions": versions()}), "arch": result.student.name}
    with atomic_output(path) as tmp:
        save_file(result.state_dict, str(tmp), metadata=meta)


# ----------------------------------------------------------------------------- SAT lookups


def _sym(S: np.ndarray, i: int, j: int) -> float:
    return float((S[i, j] + S[j, i]) / 2.0)


def zoo_models_of_arch(arch: str, names: Sequence[str]) -> list[str]:
    """Matrix names that are trained zoo models of zoo architecture ``arch`` (``vit`` -> digits/vit-s1, ...)."""
    from satkit.models import zoo

    return [n for n in names if n.startswith(ZOO_PREFIX) and zoo.ZOO_MODELS.get(n.removeprefix(ZOO_PREFIX)) is not None
            and zoo.ZOO_MODELS[n.removeprefix(ZOO_PREFIX)].arch == arch]


def student_proxies(student: str, names: Sequence[str], sat_proxy: Sequence[str] | None = None) -> list[str]:
    """Matrix models standing in for ``student`` (module docstring); empty when none is found."""
    if sat_proxy:
        missing = [p for p in sat_proxy if p not in names]
        if missing:
            from satkit.errors import MismatchError

            raise MismatchError(f"--sat-proxy model(s) {', '.join(missing)} not in the SAT matrix")
        return list(sat_proxy)
    if student in names:
        return [student]
    from satkit.models import zoo

    key = student.removeprefix(ZOO_PREFIX)
    arch = key if key in zoo.ZOO_ARCHS else None
    return zoo_models_of_arch(arch, names) if arch else []


def teacher_student_sat(names: Sequence[str], S: np.ndarray, teacher: str, proxies: Sequence[str]) -> tuple[float, list[str]]:
    """Mean SAT between ``teacher`` and the proxies other than itself; (NaN, []) when not available."""
    index = {n: i for i, n in enumerate(names)}
    if teacher not in index:
        return float("nan"), []
    used = [p for p in proxies if p in index and p != teacher]
    if not used:
        return float("nan"), []
    return float(np.mean([_sym(S, index[teacher], index[p]) for p in used])), used


# ----------------------------------------------------------------------------- recommendation


def _student_card(student: str, cards: pl.DataFrame | None) -> dict[str, str] | None:
    from satkit.cards import card_of
    from satkit.models import zoo

    card = card_of(student, cards)
    if card is not None:
        return card
    key = student.removeprefix(ZOO_PREFIX)
    if key in zoo.ZOO_ARCHS:
        return dict(zoo.ZOO_ARCHS[key].card)
    return None


def recommend_teachers(
    student: str,
    names: Sequence[str],
    S: np.ndarray,
    cards: pl.DataFrame | None = None,
    sat_proxy: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Rank every other model of the SAT matrix as a teacher for ``student`` (rule in the module docstring).

    ``student``: a model of the matrix, or a zoo architecture (``digits/vit``)
    represented by its trained models in the matrix. Returns rank, teacher,
    base_architecture, same_base (null when unknown), sat, reason.
    """
    from satkit.cards import card_of
    from satkit.errors import MismatchError

    names = list(names)
    S = np.asarray(S, dtype=float)
    proxies = student_proxies(student, names, sat_proxy)
    if not proxies:
        raise MismatchError(
            f"student {student} is not in the SAT matrix and has no stand-in there; give a model of the matrix, "
            "a zoo architecture whose models are in it (digits/vit), or --sat-proxy NAME"
        )
    scard = _student_card(student, cards) or (card_of(proxies[0], cards) if proxies else None)
    if scard is None or scard.get("Base architecture", "~") == "~":
        raise MismatchError(f"no model card with a base architecture for student {student}; add one with --cards FILE (template: satkit cards export)")
    sbase = scard["Base architecture"]
    rows = []
    for cand in names:
        if cand == student:
            continue
        sat, used = teacher_student_sat(names, S, cand, proxies)
        if not used:
            continue  # the only stand-in is the candidate itself
        card = card_of(cand, cards)
        base = card.get("Base architecture") if card else None
        base = None if base in (None, "~") else base
        rows.append({"teacher": cand, "base_architecture": base, "same_base": None if base is None else base == sbase, "sat": sat})
    if not rows:
        raise MismatchError(f"the SAT matrix has no candidate teacher for {student}; it needs other models")
    diff = sorted((r for r in rows if r["same_base"] is False), key=lambda r: (r["sat"], r["teacher"]))
    same = sorted((r for r in rows if r["same_base"] is True), key=lambda r: (-r["sat"], r["teacher"]))
    unknown = sorted((r for r in rows if r["same_base"] is None), key=lambda r: (r["sat"], r["teacher"]))
    out = []
    for i, r in enumerate(diff):
        r["reason"] = (f"different base architecture ({r['base_architecture']} vs student's {sbase}): a more dissimilar teacher "
                       f"distills better and the paper recommends a significantly different teacher; SAT {r['sat']:.2f} is "
                       f"#{i + 1} lowest of {len(diff)} different-architecture candidates")
        out.append(r)
    for i, r in enumerate(same):
        r["reason"] = (f"same base architecture ({sbase}): here a more similar teacher is easier to follow (paper Fig. 11b), "
                       f"but a different-architecture teacher is preferred overall; SAT {r['sat']:.2f} is #{i + 1} highest "
                       f"of {len(same)} same-architecture candidates")
        out.append(r)
    for r in unknown:
        r["reason"] = f"no model card, so the base architecture is unknown (add it with --cards); ranked last, by SAT {r['sat']:.2f}"
        out.append(r)
    for i, r in enumerate(out):
        r["rank"] = i + 1
    schema = {"rank": pl.Int64, "teacher": pl.Utf8, "base_architecture": pl.Utf8, "same_base": pl.Boolean, "sat": pl.Float64, "reason": pl.Utf8}
    return pl.DataFrame([{k: r[k] for k in schema} for r in out], schema=schema)


METRIC_COLUMNS = [
    "teacher", "student", "student_arch", "mode", "sat", "sat_with", "student_accuracy", "teacher_accuracy",
    "teacher_student_agreement", "epochs", "seed", "alpha", "temperature", "train_seconds", "n_train", "n_test", "weights",
]
METRIC_SCHEMA = {
    "teacher": pl.Utf8, "student": pl.Utf8, "student_arch": pl.Utf8, "mode": pl.Utf8, "sat": pl.Float64, "sat_with": pl.Utf8,
    "student_accuracy": pl.Float64, "teacher_accuracy": pl.Float64, "teacher_student_agreement": pl.Float64,
    "epochs": pl.Int64, "seed": pl.Int64, "alpha": pl.Float64, "temperature": pl.Float64, "train_seconds": pl.Float64,
    "n_train": pl.Int64, "n_test": pl.Int64, "weights": pl.Utf8,
}


def metrics_row(result: DistillResult, student_name: str, weights: str, sat: float | None, sat_with: Sequence[str]) -> pl.DataFrame:
    m = result.metrics
    row = {**{k: m.get(k) for k in METRIC_COLUMNS if k in m}, "student": student_name, "weights": weights,
           "sat": None if sat is None or sat != sat else sat, "sat_with": ";".join(sat_with) if sat_with else None}
    return pl.DataFrame([{k: row.get(k) for k in METRIC_COLUMNS}], schema=METRIC_SCHEMA)


def append_metrics(path, row: pl.DataFrame) -> pl.DataFrame:
    """Append ``row`` to the metrics CSV at ``path`` (created when missing); returns the whole table."""
    from pathlib import Path

    from satkit.errors import InputFileError
    from satkit.io.tables import read_table, write_table

    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        old = read_table(p, "distillation metrics table")
        if [c for c in old.columns] != METRIC_COLUMNS:
            raise InputFileError(f"{p}: not a satkit distill metrics table (columns differ); choose another --metrics file")
        table = pl.concat([old.cast(METRIC_SCHEMA), row])  # type: ignore[arg-type]
    else:
        table = row
    write_table(table, p)
    return table
