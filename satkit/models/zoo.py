"""The built-in "digits zoo": small timm classifiers trained on scikit-learn's digits.

The zoo is satkit's end-to-end model set: ten tiny models from six clearly
different timm architecture families (plain CNN, ConvNeXt, ViT, MLP-Mixer,
ConvMixer, MobileNetV3-style NAS blocks), two input resolutions, and extra
seeds of two families, so that SAT can be demonstrated (same-architecture pairs
vs. cross-architecture pairs) on a laptop CPU in minutes.

Models are named ``<arch>-s<seed>`` (users write ``digits/resnet-s1``). Trained
weights ship as package data in ``satkit/zoo_weights/``; ``satkit zoo`` can
re-train them into the user cache (:func:`zoo_home`), which takes precedence.

Named sets (:data:`ZOO_SETS`): ``default`` is the ten models above (the default
study, ``satkit zoo list``/``train``); ``strategies`` is the seeds of ``resnet``
and ``vit`` plus their *training-strategy variants* ``<arch>-<variant>``: seed 1
(the initialization and data order of ``<arch>-s1``) with one change to the
architecture's recipe (:data:`VARIANTS`) -- learning rate x3 (``lr``), weight
decay x10 (``wd``), no shift augmentation (``noaug``), no label smoothing
(``nols``), knowledge distillation from the other architecture's ``-s1`` model
(``kd``), twice the epochs (``long``). So SAT between ``<arch>-s1`` and a
variant measures what the training alone changes, next to what the seed alone
changes. :data:`ZOO_MODELS` holds every model of every set.

Distillation (``kd``): the teacher's weights are loaded like any zoo model
(:func:`find_weights`); its logits on the un-augmented training images are
computed once, before training, and the student's loss is
``(1 - a) * CE_ls(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))`` with
``a = 0.5``, ``T = 3`` (:data:`KD_WEIGHT`, :data:`KD_TEMPERATURE`; the defaults
of ``satkit distill --soft``). The student still sees the recipe's shifted images
while the soft target is the teacher's view of the unshifted image (offline
distillation).

Training is :func:`satkit.models.train.fit` (shared with distillation), which
preprocesses through :func:`satkit.models.wrapper.preprocess` like the evaluation
wrapper. Training is seeded and deterministic on CPU: the same seed, torch
and timm build, CPU (its kernels: AVX-512, AVX2, ...) and thread count give
bit-identical weights (the packaged weights were trained with
``torch.set_num_threads(2)``). Another thread count or CPU changes the float
rounding, and 30 epochs of training amplify it: the weights differ by up to a
few percent of their norm, the predictions do not (tests/test_zoo_strategies.py
has the measured numbers). So every weights file records the build that made it
(:func:`training_build`, :func:`recorded_build`), and a reproduction is compared
bit for bit only on the same build. This module never prints or exits; progress
is reported only through callbacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from satkit.cards import COMPONENTS  # the paper's 13 model-card columns, in its order
from satkit.errors import ModelError, ParameterError
from satkit.models.train import accuracy, fit, predict
from satkit.models.wrapper import DataConfig, preprocess

NUM_CLASSES = 10
ZOO_PREFIX = "digits/"
WEIGHTS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class TrainRecipe:
    """How one architecture is trained (AdamW, linear warm-up + cosine decay)."""

    epochs: int
    lr: float
    weight_decay: float = 0.05
    batch_size: int = 64
    label_smoothing: float = 0.1
    # Random translation of the 16-px canvas in pixels; 1 px helps every arch, 2 px hurts the ViT.
    max_shift: int = 1
    warmup_epochs: int = 1


@dataclass(frozen=True)
class ZooArch:
    name: str
    build: Callable[[], nn.Module]
    data_config: DataConfig
    card: dict[str, str]
    description: str
    recipe: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=20, lr=2e-3))


# The kd variants' distillation settings (module docstring).
KD_WEIGHT = 0.5
KD_TEMPERATURE = 3.0


@dataclass(frozen=True)
class ZooModel:
    """One trained zoo model: an architecture, a seed, and for a training-strategy variant its recipe change.

    ``recipe_overrides`` are :class:`TrainRecipe` fields replacing the
    architecture's (a mapping or pairs; stored as sorted pairs); ``teacher`` is the
    zoo model distilled from (``kd_weight``, ``kd_temperature``); ``training``
    says in words how the training differs (empty: the architecture's recipe).
    """

    name: str
    arch: str
    seed: int
    recipe_overrides: Any = ()
    teacher: str | None = None
    kd_weight: float = KD_WEIGHT
    kd_temperature: float = KD_TEMPERATURE
    training: str = ""

    def __post_init__(self) -> None:
        pairs = self.recipe_overrides.items() if isinstance(self.recipe_overrides, Mapping) else self.recipe_overrides
        pairs = tuple(sorted((str(k), v) for k, v in pairs))
        known = {f.name for f in dataclasses.fields(TrainRecipe)}
        bad = [k for k, _ in pairs if k not in known]
        if bad:
            raise ParameterError(f"zoo model {self.name}: unknown recipe field(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        object.__setattr__(self, "recipe_overrides", pairs)

    @property
    def is_variant(self) -> bool:
        """True for a training-strategy variant (a changed recipe or a teacher)."""
        return bool(self.recipe_overrides) or self.teacher is not None

    def recipe(self) -> TrainRecipe:
        """The recipe this model is trained with: its architecture's, with the overrides applied."""
        return dataclasses.replace(ZOO_ARCHS[self.arch].recipe, **dict(self.recipe_overrides))


# --------------------------------------------------------------------------- builders
# Every builder uses timm's own model classes with tiny configs; in_chans=1
# because the digits are grey-scale. Imports are local so `import satkit` stays fast.


def _build_resnet() -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    # ResNet-10-ish: timm's plain 7x7 s2 stem (always 64 channels) + 3x3 s2 max-pool
    # (32 -> 16 -> 8), then 4 BasicBlock stages at 8/4/2/1 px.
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=NUM_CLASSES, in_chans=1, channels=(16, 32, 48, 64))


def _build_convnext() -> nn.Module:
    from timm.models.convnext import ConvNeXt

    # 4x4 s4 patchify stem (32 -> 8); timm's ConvNeXt always has 4 stages (8/4/2/1).
    # 3x3 depthwise kernels: 7x7 would be mostly padding on maps this small.
    return ConvNeXt(in_chans=1, num_classes=NUM_CLASSES, depths=(1, 1, 2, 1), dims=(24, 32, 48, 64), patch_size=4, kernel_sizes=3)


def _build_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # 16 px / patch 4 = 16 tokens + CLS token.
    return VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, num_classes=NUM_CLASSES, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0
    )


def _build_mixer() -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(
        num_classes=NUM_CLASSES, img_size=16, in_chans=1, patch_size=4, num_blocks=4, embed_dim=64, mlp_ratio=(1.0, 2.0)
    )


def _build_convmixer() -> nn.Module:
    from timm.models.convmixer import ConvMixer

    # 2x2 s2 patch stem (16 -> 8), isotropic depthwise/pointwise blocks.
    return ConvMixer(dim=48, depth=4, kernel_size=5, patch_size=2, in_chans=1, num_classes=NUM_CLASSES)


# MobileNetV3-style blocks (timm's EfficientNet-builder notation): depthwise-separable and
# inverted-residual blocks, squeeze-excite inside some blocks, hard-swish everywhere.
_MOBILENET_ARCH_DEF = [
    ["ds_r1_k3_s2_e1_c16_se0.25"],  # 16x16 -> 8x8
    ["ir_r1_k3_s1_e4_c24", "ir_r1_k3_s1_e3_c24"],  # 8x8
    ["ir_r2_k5_s2_e4_c40_se0.25"],  # 4x4
    ["ir_r1_k3_s2_e4_c64_se0.25"],  # 2x2
    ["cn_r1_k1_s1_c128"],
]


def _build_mobilenet() -> nn.Module:
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.mobilenetv3 import MobileNetV3

    # Same SE flavour as timm's mobilenetv3 (ReLU inside, hard-sigmoid gate); 3x3 s2 stem 32 -> 16.
    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU)
    return MobileNetV3(
        decode_arch_def(_MOBILENET_ARCH_DEF),
        num_classes=NUM_CLASSES,
        in_chans=1,
        stem_size=16,
        num_features=256,
        act_layer=nn.Hardswish,
        se_layer=se_layer,
    )


# Pixels in [0, 1] -> roughly zero-centred, unit range. One convention for the whole zoo
# keeps it simple; the models differ in resolution and architecture, not in normalization.
_MEAN, _STD = (0.5,), (0.5,)


def _cfg(size: int) -> DataConfig:
    return DataConfig(input_size=(1, size, size), mean=_MEAN, std=_STD, interpolation="bilinear")


# Cards use the paper's vocabulary (appendix C): "2D SA" means 2D self-attention blocks inside a
# CNN (BoT, Halo, Lambda); the paper marks plain Transformers (ViT, DeiT) "No" there, and so do we.
def _arch_card(
    base: str, hier: str, stem: str, res: int, norm: str, act: str, pool_stem: str, pool_final: str,
    sa: str, cw: str, cw_loc: str, dw: str, group: str,
) -> dict[str, str]:
    values = [base, hier, stem, f"{res} {res}", norm, act, pool_stem, pool_final, sa, cw, cw_loc, dw, group]
    return dict(zip(COMPONENTS, values))


ZOO_ARCHS: dict[str, ZooArch] = {
    a.name: a
    for a in [
        ZooArch(
            "resnet",
            _build_resnet,
            _cfg(32),
            _arch_card("CNN", "Yes", "7s2", 32, "BN", "ReLU", "Yes", "GAP", "No", "No", "~", "No", "No"),
            "timm ResNet, BasicBlock [1,1,1,1], stage channels 16-64; 7x7 s2 stem (64 ch) + max-pool; input 32 (canvas upsampled)",
            TrainRecipe(epochs=15, lr=3e-3),
        ),
        ZooArch(
            "convnext",
            _build_convnext,
            _cfg(32),
            _arch_card("CNN", "Yes", "4s4", 32, "LN", "GeLU", "No", "GAP", "No", "No", "~", "Yes", "No"),
            "timm ConvNeXt, depths (1,1,2,1), dims 24-64, 3x3 depthwise; 4x4 s4 patchify stem; input 32",
            TrainRecipe(epochs=25, lr=3e-3),
        ),
        ZooArch(
            "vit",
            _build_vit,
            _cfg(16),
            _arch_card("Transformer", "No", "4s4", 16, "LN", "GeLU", "No", "CLS token", "No", "No", "~", "No", "No"),
            "timm VisionTransformer, patch 4, dim 64, depth 3, 4 heads, CLS token; input 16",
            TrainRecipe(epochs=30, lr=2e-3),
        ),
        ZooArch(
            "mixer",
            _build_mixer,
            _cfg(16),
            _arch_card("MLP-Mixer", "No", "4s4", 16, "LN", "GeLU", "No", "GAP", "No", "No", "~", "No", "No"),
            "timm MlpMixer, patch 4, dim 64, 4 blocks; input 16",
            TrainRecipe(epochs=30, lr=2e-3),
        ),
        ZooArch(
            "convmixer",
            _build_convmixer,
            _cfg(16),
            _arch_card("CNN", "No", "2s2", 16, "BN", "GeLU", "No", "GAP", "No", "No", "~", "Yes", "No"),
            "timm ConvMixer, dim 48, depth 4, 5x5 depthwise; 2x2 s2 patch stem; input 16",
            TrainRecipe(epochs=20, lr=3e-3),
        ),
        ZooArch(
            "mobilenet",
            _build_mobilenet,
            _cfg(32),
            _arch_card("NAS (CNN)", "Yes", "3s2", 32, "BN", "HardSwish", "No", "GAP", "No", "Yes (SE)", "Middle", "Yes", "No"),
            "timm MobileNetV3 (NAS-derived inverted-residual blocks), SE inside blocks, hard-swish; 3x3 s2 stem; input 32",
            TrainRecipe(epochs=20, lr=3e-3),
        ),
    ]
}

# The default zoo: seeds per architecture.
_SEEDS = {"resnet": (1, 2, 3), "vit": (1, 2, 3), "convnext": (1,), "mixer": (1,), "convmixer": (1,), "mobilenet": (1,)}

# Training-strategy variants of these architectures; each distills (kd) from the other one's seed-1 model.
_STRATEGY_TEACHERS = {"resnet": "vit-s1", "vit": "resnet-s1"}
VARIANTS = ("lr", "wd", "noaug", "nols", "kd", "long")
LR_FACTOR = 3.0
WD_FACTOR = 10.0


def _variant(arch: str, variant: str) -> ZooModel:
    """``<arch>-<variant>``: seed 1 and one change to the architecture's recipe (module docstring)."""
    r = ZOO_ARCHS[arch].recipe
    name = f"{arch}-{variant}"
    if variant == "kd":
        teacher = _STRATEGY_TEACHERS[arch]
        return ZooModel(name, arch, 1, teacher=teacher,
                        training=f"distilled from digits/{teacher} (soft targets, T={KD_TEMPERATURE:g}, weight {KD_WEIGHT:g})")
    overrides, what = {
        "lr": ({"lr": round(r.lr * LR_FACTOR, 12)}, f"learning rate x{LR_FACTOR:g} ({r.lr:g} -> {r.lr * LR_FACTOR:.3g})"),
        "wd": ({"weight_decay": round(r.weight_decay * WD_FACTOR, 12)},
               f"weight decay x{WD_FACTOR:g} ({r.weight_decay:g} -> {r.weight_decay * WD_FACTOR:.3g})"),
        "noaug": ({"max_shift": 0}, f"no shift augmentation (max_shift {r.max_shift} -> 0)"),
        "nols": ({"label_smoothing": 0.0}, f"no label smoothing ({r.label_smoothing:g} -> 0)"),
        "long": ({"epochs": 2 * r.epochs}, f"2x epochs ({r.epochs} -> {2 * r.epochs})"),
    }[variant]
    return ZooModel(name, arch, 1, recipe_overrides=overrides, training=what)


_DEFAULT_MODELS = [ZooModel(f"{arch}-s{seed}", arch, seed) for arch, seeds in _SEEDS.items() for seed in seeds]
_VARIANT_MODELS = [_variant(arch, v) for arch in _STRATEGY_TEACHERS for v in VARIANTS]

# Every zoo model (any set): what digits/<name> resolves to.
ZOO_MODELS: dict[str, ZooModel] = {m.name: m for m in _DEFAULT_MODELS + _VARIANT_MODELS}

# Named model sets; "default" is the zoo of the default study, `satkit zoo list` and `satkit zoo train`.
ZOO_SETS: dict[str, list[str]] = {
    "default": [m.name for m in _DEFAULT_MODELS],
    "strategies": [n for arch in _STRATEGY_TEACHERS
                   for n in [f"{arch}-s{seed}" for seed in _SEEDS[arch]] + [f"{arch}-{v}" for v in VARIANTS]],
}
DEFAULT_SET = "default"


def zoo_set(name: str = DEFAULT_SET) -> list[str]:
    """The model names of a named zoo set (:data:`ZOO_SETS`); :class:`ParameterError` for an unknown set."""
    if name not in ZOO_SETS:
        raise ParameterError(f"unknown zoo set '{name}'; known: {', '.join(ZOO_SETS)}")
    return list(ZOO_SETS[name])


# --------------------------------------------------------------------------- lookup


def _strip_prefix(name: str) -> str:
    name = name.strip()
    return name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else name


def _resolve(name_or_arch: str) -> tuple[ZooArch, ZooModel | None]:
    key = _strip_prefix(name_or_arch)
    if key in ZOO_MODELS:
        m = ZOO_MODELS[key]
        return ZOO_ARCHS[m.arch], m
    if key in ZOO_ARCHS:
        return ZOO_ARCHS[key], None
    raise ModelError(
        f"unknown zoo model '{name_or_arch}'; valid: {', '.join(ZOO_MODELS)} (as digits/<name>) or an architecture: {', '.join(ZOO_ARCHS)}"
    )


def _model(name: str) -> ZooModel:
    arch, model = _resolve(name)
    if model is None:
        raise ModelError(f"'{name}' is an architecture, not a trained zoo model; use e.g. digits/{arch.name}-s1")
    return model


def zoo_home() -> Path:
    """Where ``satkit zoo`` writes trained weights: ``$SATKIT_HOME/zoo`` or the user cache dir."""
    home = os.environ.get("SATKIT_HOME")
    if home:
        return Path(home).expanduser() / "zoo"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "satkit" / "zoo"


def packaged_weights_dir() -> Path:
    """The weights shipped inside the package (``satkit/zoo_weights/``)."""
    return Path(__file__).resolve().parent.parent / "zoo_weights"


def find_weights(name: str) -> Path | None:
    """The weights file of a zoo model: user cache first (re-trained), then packaged; None if neither."""
    model = _model(name)
    for d in (zoo_home(), packaged_weights_dir()):
        p = d / f"{model.name}{WEIGHTS_SUFFIX}"
        if p.is_file():
            return p
    return None


# The build a weights file was trained with: the "build" metadata key of files written by
# train_zoo; for files older than that key (the packaged set), BUILD_FILE in the same folder.
BUILD_KEY = "build"
BUILD_FILE = "build.json"
BUILD_FIELDS = ("torch", "timm", "cpu_capability", "cpu", "threads")


def _cpu_name() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else platform.processor(); None if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    import platform

    return platform.processor() or None


def training_build() -> dict:
    """What decides the bits of a CPU training run here: torch and timm builds, CPU kernels, CPU, threads."""
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": _cpu_name(),
            "threads": torch.get_num_threads()}


def recorded_build(path: Path) -> dict:
    """The build a zoo weights file records (:func:`training_build` fields; None where not recorded)."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(BUILD_KEY)
    if raw is None:
        side = path.parent / BUILD_FILE
        rec = json.loads(side.read_text(encoding="utf-8")).get("build", {}) if side.is_file() else {}
    else:
        rec = json.loads(raw)
    return {k: rec.get(k) for k in BUILD_FIELDS}


def same_build(recorded: Mapping, current: Mapping | None = None) -> tuple[bool, str]:
    """Whether ``current`` (default: this process) is the recorded build, so training is bit-identical; and why not."""
    current = training_build() if current is None else current
    missing = [k for k in BUILD_FIELDS if recorded.get(k) is None]
    if missing:
        return False, f"the weights' build does not record {', '.join(missing)}"
    differ = [f"{k} {recorded[k]} there, {current.get(k)} here" for k in BUILD_FIELDS if recorded[k] != current.get(k)]
    return (not differ), "; ".join(differ) or "same build"


def build_zoo_module(name_or_arch: str) -> tuple[nn.Module, DataConfig, ZooArch]:
    """An un-trained module (eval mode) for ``resnet-s1``/``digits/resnet-s1`` or an architecture ``resnet``."""
    arch, _ = _resolve(name_or_arch)
    return arch.build().eval(), arch.data_config, arch


# --------------------------------------------------------------------------- training


def train_zoo_model(
    name: str, *, epochs: int | None = None, progress: Callable[[int, int], None] | None = None,
    teacher_weights: Path | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Train one zoo model from scratch with its recipe; returns (state_dict, metrics).

    Deterministic on CPU: the seed fixes the initialization (global RNG, restored
    afterwards) and the data order/augmentation (:func:`satkit.models.train.fit`).
    A ``kd`` variant's teacher weights are ``teacher_weights`` if given, else found
    by :func:`find_weights`.
    """
    from satkit.data.loaders import load_digits_set

    model_info = _model(name)
    arch = ZOO_ARCHS[model_info.arch]
    r = model_info.recipe()
    epochs = r.epochs if epochs is None else int(epochs)
    if epochs < 1:
        raise ParameterError(f"epochs must be at least 1, got {epochs}")
    train = load_digits_set("train")
    t0 = time.perf_counter()
    # Training runs inside fork_rng too, so any global-RNG draw it makes is seeded as well
    # and the caller's RNG state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        kd = {}
        if model_info.teacher is not None:  # before seeding: building the teacher draws from the global RNG
            logits = teacher_logits(model_info.teacher, train.images, weights=teacher_weights)
            kd = {"teacher_logits": logits, "kd_weight": model_info.kd_weight,
                  "temperature": model_info.kd_temperature}
        torch.manual_seed(model_info.seed)
        model = arch.build()
        fit(
            model, arch.data_config, train.images, train.labels, epochs=epochs, lr=r.lr, batch_size=r.batch_size,
            seed=model_info.seed, weight_decay=r.weight_decay, label_smoothing=r.label_smoothing,
            max_shift=r.max_shift, warmup_epochs=r.warmup_epochs, progress=progress, **kd,
        )
    seconds = time.perf_counter() - t0
    test = load_digits_set("test")
    metrics = {
        "build": training_build(),
        "test_accuracy": accuracy(predict(model, arch.data_config, test.images), test.labels),
        "train_seconds": seconds,
        "epochs": epochs,
        "params": sum(p.numel() for p in model.parameters()),
    }
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return state, metrics


@torch.no_grad()
def teacher_logits(
    teacher: str, images: torch.Tensor, *, weights: Path | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Logits (N, 10, float32) of the trained zoo model ``teacher`` on uint8 canvas ``images``, no augmentation.

    The weights are ``weights`` or found like any zoo model's (:func:`find_weights`);
    the module runs in eval mode through its own preprocessing, in fixed batches
    (so the same weights and thread count give the same logits).
    """
    from safetensors.torch import load_file

    from satkit.io.pixels import as_float

    t = _model(teacher).name
    path = Path(weights) if weights is not None else find_weights(t)
    if path is None:
        raise ModelError(f"the teacher digits/{t} has no trained weights; train it first (satkit zoo train {t})")
    module, cfg, _ = build_zoo_module(teacher)
    module.load_state_dict(load_file(str(path)), strict=True)
    out = [module(preprocess(as_float(images[i : i + batch_size]), cfg)).float() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, NUM_CLASSES)


def train_zoo(
    names: list[str] | None = None,
    out_dir: Path | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """Train zoo models and write ``<out_dir>/<name>.safetensors`` atomically (default: :func:`zoo_home`).

    ``names`` defaults to the default set (:data:`ZOO_SETS`); any zoo model can be named.
    A ``kd`` variant is trained after its teacher when both are named, and distills
    from ``<out_dir>/<teacher>.safetensors`` when that exists (else :func:`find_weights`).
    Rows come in the order of ``names``.
    """
    from safetensors.torch import save_file

    from satkit.io.atomic import atomic_output
    from satkit.io.tensorfile import canonicalize_header

    models = [_model(n) for n in (names if names is not None else zoo_set(DEFAULT_SET))]  # validate all names first
    out = Path(out_dir) if out_dir is not None else zoo_home()
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    named = {m.name for m in models}
    for m in sorted(models, key=lambda m: m.teacher in named):  # stable: teachers named here first
        cb = (lambda done, total, _n=m.name: progress(_n, done, total)) if progress is not None else None
        tw = out / f"{m.teacher}{WEIGHTS_SUFFIX}" if m.teacher is not None else None
        state, metrics = train_zoo_model(m.name, progress=cb, teacher_weights=tw if tw is not None and tw.is_file() else None)
        path = out / f"{m.name}{WEIGHTS_SUFFIX}"
        meta = {"satkit_zoo": m.name, "arch": m.arch, "seed": str(m.seed), "test_accuracy": f"{metrics['test_accuracy']:.4f}",
                BUILD_KEY: json.dumps(metrics["build"], sort_keys=True)}
        if m.is_variant:
            meta["training"] = m.training
            meta["recipe"] = json.dumps(dataclasses.asdict(m.recipe()), sort_keys=True)
            if m.teacher is not None:
                meta["teacher"] = f"{ZOO_PREFIX}{m.teacher}"
                meta["kd"] = json.dumps({"weight": m.kd_weight, "temperature": m.kd_temperature}, sort_keys=True)
        with atomic_output(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
            canonicalize_header(tmp)  # sorted header: the same weights give the same bytes (and weights id)
        rows[m.name] = {
            "name": m.name,
            "arch": m.arch,
            "seed": m.seed,
            "test_accuracy": metrics["test_accuracy"],
            "train_seconds": metrics["train_seconds"],
            "params": metrics["params"],
            "path": str(path),
        }
    return [rows[m.name] for m in models]
