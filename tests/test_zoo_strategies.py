"""The "strategies" zoo set: resnet/vit variants that differ from <arch>-s1 only in how they are trained."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from satkit.cards import card_of
from satkit.data.loaders import load_digits_set
from satkit.errors import ModelError, ParameterError
from satkit.models import load_model, zoo
from satkit.models.train import accuracy, predict
from satkit.study import default_models

from cli_helpers import assert_clean_error, run

STRATEGIES = zoo.ZOO_SETS["strategies"]
VARIANTS = [n for n in STRATEGIES if zoo.ZOO_MODELS[n].is_variant]


@pytest.fixture(scope="module")
def digits_test():
    return load_digits_set("test")


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_strategies_set_composition():
    assert len(STRATEGIES) == 18 and len(set(STRATEGIES)) == 18
    seeds = [f"{a}-s{s}" for a in ("resnet", "vit") for s in (1, 2, 3)]
    assert set(seeds) <= set(STRATEGIES)
    assert sorted(VARIANTS) == sorted(f"{a}-{v}" for a in ("resnet", "vit") for v in zoo.VARIANTS)
    assert set(zoo.ZOO_MODELS) == set(zoo.ZOO_SETS["default"]) | set(STRATEGIES)
    # the default set, and so the default study, is the ten seed models as before
    assert zoo.ZOO_SETS["default"] == ["resnet-s1", "resnet-s2", "resnet-s3", "vit-s1", "vit-s2", "vit-s3",
                                       "convnext-s1", "mixer-s1", "convmixer-s1", "mobilenet-s1"]
    assert default_models() == [f"digits/{n}" for n in zoo.ZOO_SETS["default"]]
    assert default_models("strategies") == [f"digits/{n}" for n in STRATEGIES]
    with pytest.raises(ParameterError, match="unknown zoo set 'nope'"):
        default_models("nope")


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_differs_from_seed_1_only_in_training(name):
    m = zoo.ZOO_MODELS[name]
    arch, variant = name.split("-")
    base = zoo.ZOO_MODELS[f"{arch}-s1"]
    assert (m.arch, m.seed) == (base.arch, base.seed) == (arch, 1)
    assert m.training and not base.training
    r, r0 = m.recipe(), base.recipe()
    changed = {f.name for f in dataclasses.fields(r) if getattr(r, f.name) != getattr(r0, f.name)}
    expected = {"lr": {"lr"}, "wd": {"weight_decay"}, "noaug": {"max_shift"}, "nols": {"label_smoothing"},
                "kd": set(), "long": {"epochs"}}[variant]
    assert changed == expected
    if variant == "kd":
        assert m.teacher == {"resnet": "vit-s1", "vit": "resnet-s1"}[arch]
        assert zoo.ZOO_MODELS[m.teacher].arch != arch
    else:
        assert m.teacher is None
    assert {"lr": r.lr == pytest.approx(3 * r0.lr), "wd": r.weight_decay == pytest.approx(10 * r0.weight_decay), "noaug": r.max_shift == 0,
            "nols": r.label_smoothing == 0.0, "kd": True, "long": r.epochs == 2 * r0.epochs}[variant]
    # same module: the card (architecture) is the arch's, in the shipped cards CSV too
    assert card_of(f"digits/{name}") == zoo.ZOO_ARCHS[arch].card == card_of(f"digits/{arch}-s1")


@pytest.mark.parametrize("name", VARIANTS)
def test_packaged_variant_loads_and_is_accurate(name, digits_test):
    path = zoo.find_weights(name)
    assert path is not None and path.parent == zoo.packaged_weights_dir(), f"{name}: no packaged weights"
    assert 300_000 < path.stat().st_size < 600_000
    lm = load_model(f"digits/{name}")
    assert lm.kind == "zoo" and lm.num_classes == 10
    with torch.no_grad():
        acc = (lm.module(digits_test.images.float() / 255.0).argmax(1) == digits_test.labels).float().mean().item()
    assert acc > 0.9, f"{name}: test accuracy {acc:.3f}"
    m = zoo.ZOO_MODELS[name]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["satkit_zoo"] == name and meta["arch"] == m.arch and int(meta["seed"]) == m.seed
    assert abs(float(meta["test_accuracy"]) - acc) < 1e-3
    assert meta["training"] == m.training
    assert json.loads(meta["recipe"]) == dataclasses.asdict(m.recipe())
    assert meta.get("teacher") == (f"digits/{m.teacher}" if m.teacher else None)


def test_one_epoch_variant_training_is_reproducible():
    rng = torch.get_rng_state()
    a, _ = zoo.train_zoo_model("vit-noaug", epochs=1)
    b, _ = zoo.train_zoo_model("vit-noaug", epochs=1)
    base, _ = zoo.train_zoo_model("vit-s1", epochs=1)
    assert _same_state(a, b)
    assert not _same_state(a, base)  # the recipe change matters
    assert torch.equal(torch.get_rng_state(), rng)


def test_kd_variant_uses_its_teacher(monkeypatch):
    """vit-kd for one epoch differs from the same run without the teacher's term (kd weight 0 = the vit-s1 recipe)."""
    rng = torch.get_rng_state()
    kd, _ = zoo.train_zoo_model("vit-kd", epochs=1)
    assert torch.equal(torch.get_rng_state(), rng), "loading the teacher must not disturb the global RNG"
    monkeypatch.setitem(zoo.ZOO_MODELS, "vit-kd", dataclasses.replace(zoo.ZOO_MODELS["vit-kd"], kd_weight=0.0))
    no_teacher, _ = zoo.train_zoo_model("vit-kd", epochs=1)
    plain, _ = zoo.train_zoo_model("vit-s1", epochs=1)
    assert not _same_state(kd, no_teacher)
    assert _same_state(no_teacher, plain)  # kd weight 0 is exactly the seed-1 recipe


def test_teacher_logits_are_the_teachers_predictions(digits_test):
    images = digits_test.images[:100]
    logits = zoo.teacher_logits("resnet-s1", images)
    assert logits.shape == (100, 10) and logits.dtype == torch.float32
    module, cfg, _ = zoo.build_zoo_module("resnet-s1")
    module.load_state_dict(load_file(str(zoo.find_weights("resnet-s1"))))
    assert torch.equal(logits.argmax(1), predict(module, cfg, images))

def test_kd_without_teacher_weights_is_a_model_error(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo, "packaged_weights_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(ModelError, match="teacher digits/resnet-s1 has no trained weights") as e:
        zoo.train_zoo_model("vit-kd", epochs=1)
    assert "\n" not in str(e.value)


def test_train_zoo_trains_teachers_first(monkeypatch, tmp_path):
    """A kd student named with its teacher is trained after it and distills from the new teacher file."""
    for arch in ("resnet", "vit"):
        a = zoo.ZOO_ARCHS[arch]
        monkeypatch.setitem(zoo.ZOO_ARCHS, arch, dataclasses.replace(a, recipe=dataclasses.replace(a.recipe, epochs=1)))
    seen, used = [], []
    real = zoo.teacher_logits
    monkeypatch.setattr(zoo, "teacher_logits", lambda t, x, weights=None: used.append((t, weights)) or real(t, x, weights=weights))
    rows = zoo.train_zoo(["vit-kd", "resnet-s1"], out_dir=tmp_path, progress=lambda n, d, t: seen.append(n))
    assert seen == ["resnet-s1", "vit-kd"] and [r["name"] for r in rows] == ["vit-kd", "resnet-s1"]
    assert used == [("resnet-s1", tmp_path / "resnet-s1.safetensors")]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit-kd"])  # the cheapest arch (~10 s idle), and it covers the teacher
def test_full_recipe_reproduces_the_packaged_weights(name):
    """The whole recipe (vit: 30 epochs) gives the packaged tensors exactly, at 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        state, metrics = zoo.train_zoo_model(name)
    finally:
        torch.set_num_threads(threads)
    packaged = load_file(str(zoo.packaged_weights_dir() / f"{name}.safetensors"))
    assert _same_state(state, packaged)
    test = load_digits_set("test")
    module, cfg, _ = zoo.build_zoo_module(name)
    module.load_state_dict(packaged)
    assert metrics["test_accuracy"] == accuracy(predict(module, cfg, test.images), test.labels)


# ----------------------------------------------------------------------------- CLI


def test_study_zoo_strategies_plan(tmp_path):
    r = run("study", "--zoo", "strategies", "--plan", "-o", tmp_path / "s")
    assert "models: 18" in r.stdout
    r0 = run("study", "--zoo", "default", "--plan", "-o", tmp_path / "s")
    assert r0.stdout == run("study", "--plan", "-o", tmp_path / "s").stdout and "models: 10" in r0.stdout


def test_study_zoo_errors(tmp_path):
    assert_clean_error(run("study", "--zoo", "nope", "--plan", "-o", tmp_path / "s", ok=False), "nope", "strategies")
    assert_clean_error(run("study", "--zoo", "strategies", "digits/resnet-s1", "--plan", "-o", tmp_path / "s", ok=False),
                       "--zoo")


def test_zoo_list_sets():
    r = run("zoo", "list")
    assert r.stdout.split() == [f"digits/{n}" for n in zoo.ZOO_SETS["default"]]
    assert "training" not in r.stderr
    r = run("zoo", "list", "--set", "strategies")
    assert r.stdout.split() == [f"digits/{n}" for n in STRATEGIES]
    assert_clean_error(run("zoo", "list", "--set", "nope", ok=False), "nope")
    assert_clean_error(run("zoo", "train", "resnet-kd", "--set", "strategies", ok=False), "--set")
