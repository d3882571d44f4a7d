"""The built-in digits zoo: packaged weights, model cards, training determinism, lookup."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from satkit.data.loaders import load_digits_set
from satkit.errors import ModelError
from satkit.models import train, zoo
from satkit.models.wrapper import ClassifierWrapper, preprocess

MIN_ACCURACY = 0.90


@pytest.fixture(scope="module")
def digits_test():
    return load_digits_set("test")


@pytest.fixture
def no_user_cache(monkeypatch, tmp_path):
    """Point SATKIT_HOME at an empty dir so only the packaged weights are found."""
    monkeypatch.setenv("SATKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _accuracy(module: torch.nn.Module, cfg, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        logits = module(preprocess(images.float() / 255.0, cfg))
    return (logits.argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("name", sorted(zoo.ZOO_MODELS))
def test_packaged_model_loads_strict_and_is_accurate(name, digits_test, no_user_cache):
    path = zoo.find_weights(name)
    assert path is not None and path.parent == zoo.packaged_weights_dir(), f"{name}: no packaged weights"
    module, cfg, arch = zoo.build_zoo_module(name)
    module.load_state_dict(load_file(str(path)), strict=True)
    assert arch.name == zoo.ZOO_MODELS[name].arch
    acc = _accuracy(module.eval(), cfg, digits_test.images, digits_test.labels)
    assert acc >= MIN_ACCURACY, f"{name}: test accuracy {acc:.3f}"
    # The evaluation wrapper (canvas pixels in [0, 1] in) agrees with preprocess + module.
    wrapped = ClassifierWrapper(module, cfg)
    with torch.no_grad():
        wrapped_pred = wrapped(digits_test.images[:64].float() / 255.0).argmax(1)
    assert torch.equal(wrapped_pred, module(preprocess(digits_test.images[:64].float() / 255.0, cfg)).argmax(1))


@pytest.mark.parametrize("name", sorted(zoo.ZOO_MODELS))
def test_packaged_metadata(name, no_user_cache):
    with safe_open(str(zoo.find_weights(name)), framework="pt") as f:
        meta = f.metadata()
    model = zoo.ZOO_MODELS[name]
    assert meta["satkit_zoo"] == name and meta["arch"] == model.arch and int(meta["seed"]) == model.seed
    assert float(meta["test_accuracy"]) >= MIN_ACCURACY


def test_zoo_composition():
    # the default set; the training-strategy variants are in tests/test_zoo_strategies.py
    default = [zoo.ZOO_MODELS[n] for n in zoo.ZOO_SETS["default"]]
    assert len(default) == 10
    assert {m.arch for m in default} == set(zoo.ZOO_ARCHS)
    assert len(zoo.ZOO_ARCHS) >= 6
    assert len({a.data_config.input_size for a in zoo.ZOO_ARCHS.values()}) >= 2
    assert len({a.card["Base architecture"] for a in zoo.ZOO_ARCHS.values()}) >= 3
    for m in default:
        assert m.name == f"{m.arch}-s{m.seed}" and not m.is_variant
    assert sorted(m.seed for m in default if m.arch == "resnet") == [1, 2, 3]
    assert sorted(m.seed for m in default if m.arch == "vit") == [1, 2, 3]


@pytest.mark.parametrize("arch", sorted(zoo.ZOO_ARCHS))
def test_cards_and_configs(arch):
    a = zoo.ZOO_ARCHS[arch]
    assert list(a.card) == zoo.COMPONENTS and len(zoo.COMPONENTS) == 13
    assert all(isinstance(v, str) and v for v in a.card.values())
    c, h, w = a.data_config.input_size
    assert c == 1 and a.card["Input resolution"] == f"{h} {w}"
    assert a.card["Pooling (final)"] in {"GAP", "CLS token"}
    assert (a.card["Location of CW attention"] == "~") == (a.card["CW attention"] == "No")
    module, cfg, _ = zoo.build_zoo_module(arch)
    assert cfg == a.data_config
    assert sum(p.numel() for p in module.parameters()) < 150_000
    with torch.no_grad():
        out = module(preprocess(torch.rand(2, 1, 16, 16), cfg))
    assert out.shape == (2, 10)


def test_cards_match_modules():
    """Spot-check that the cards tell the truth about the modules."""
    def has(arch, kind):
        return any(isinstance(m, kind) for m in zoo.build_zoo_module(arch)[0].modules())

    for arch, a in zoo.ZOO_ARCHS.items():
        assert has(arch, torch.nn.BatchNorm2d) == (a.card["Normalization"] == "BN"), arch
        assert has(arch, torch.nn.MaxPool2d) == (a.card["Pooling (stem)"] == "Yes"), arch
        dw = any(
            isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1
            for m in zoo.build_zoo_module(arch)[0].modules()
        )
        assert dw == (a.card["DW conv"] == "Yes"), arch


def test_build_accepts_names_and_archs():
    m1, cfg1, a1 = zoo.build_zoo_module("digits/resnet-s1")
    m2, cfg2, a2 = zoo.build_zoo_module("resnet")
    assert a1 is a2 and cfg1 == cfg2
    assert m1.state_dict().keys() == m2.state_dict().keys()


@pytest.mark.parametrize("bad", ["resnet-s9", "digits/nope", "", "resnet50"])
def test_unknown_names_raise_model_error(bad):
    with pytest.raises(ModelError) as e:
        zoo.build_zoo_module(bad)
    msg = str(e.value)
    assert "\n" not in msg and "resnet-s1" in msg and "mobilenet-s1" in msg
    with pytest.raises(ModelError):
        zoo.find_weights(bad)


def test_find_weights_respects_satkit_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SATKIT_HOME", str(tmp_path))
    assert zoo.zoo_home() == tmp_path / "zoo"
    assert zoo.find_weights("resnet-s1") == zoo.packaged_weights_dir() / "resnet-s1.safetensors"
    (tmp_path / "zoo").mkdir()
    cached = tmp_path / "zoo" / "resnet-s1.safetensors"
    cached.write_bytes(b"")  # existence is what counts; the cache wins over the package
    assert zoo.find_weights("digits/resnet-s1") == cached
    monkeypatch.delenv("SATKIT_HOME")
    assert zoo.zoo_home() != tmp_path / "zoo"


def test_find_weights_none_without_any_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SATKIT_HOME", str(tmp_path))
    monkeypatch.setattr(zoo, "packaged_weights_dir", lambda: tmp_path / "nowhere")
    assert zoo.find_weights("vit-s2") is None


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_deterministic_and_seeded():
    rng_before = torch.get_rng_state()
    calls = []
    s1, m1 = zoo.train_zoo_model("vit-s1", epochs=1, progress=lambda d, t: calls.append((d, t)))
    s1b, _ = zoo.train_zoo_model("vit-s1", epochs=1)
    s2, _ = zoo.train_zoo_model("vit-s2", epochs=1)
    assert _same_state(s1, s1b)
    assert not _same_state(s1, s2)
    assert torch.equal(torch.get_rng_state(), rng_before), "training must not disturb the global RNG"
    assert calls == [(1, 1)]
    assert m1["epochs"] == 1 and m1["params"] > 0 and m1["train_seconds"] > 0
    assert 0.0 <= m1["test_accuracy"] <= 1.0
    assert all(t.is_contiguous() for t in s1.values())
    module, _, _ = zoo.build_zoo_module("vit-s1")
    module.load_state_dict(s1, strict=True)


def test_train_zoo_writes_atomically(monkeypatch, tmp_path):
    # One cheap epoch instead of the real recipe keeps this test fast.
    arch = zoo.ZOO_ARCHS["convnext"]
    monkeypatch.setitem(zoo.ZOO_ARCHS, "convnext", dataclasses.replace(arch, recipe=dataclasses.replace(arch.recipe, epochs=1)))
    seen = []
    rows = zoo.train_zoo(["digits/convnext-s1"], out_dir=tmp_path, progress=lambda n, d, t: seen.append((n, d, t)))
    assert seen == [("convnext-s1", 1, 1)]
    (row,) = rows
    assert set(row) >= {"name", "arch", "seed", "test_accuracy", "train_seconds", "params", "path"}
    assert row["name"] == "convnext-s1" and row["arch"] == "convnext" and row["seed"] == 1
    path = tmp_path / "convnext-s1.safetensors"
    assert row["path"] == str(path) and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary files left behind"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["satkit_zoo"] == "convnext-s1"
    with pytest.raises(ModelError):
        zoo.train_zoo(["convnext-s1", "bogus"], out_dir=tmp_path)


def reference_fit(model, cfg, images, labels, *, seed, epochs, lr, batch_size=64, weight_decay=0.05, label_smoothing=0.1,
                  max_shift=1, teacher_term=None, alpha=0.5):
    """The training loop the packaged weights were made with, frozen (as written before train.fit existed).

    ``fit`` must reproduce it bit for bit: same ops, same float expressions, same
    generator draws in the same order. ``teacher_term(x, logits)`` adds distillation.
    """
    x_all, y_all = images.to(torch.float32) / 255.0, labels
    gen = torch.Generator().manual_seed(10_000 + seed)
    steps = math.ceil(len(y_all) / batch_size)
    total, warmup = epochs * steps, steps  # one warm-up epoch

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * ((step - warmup) / max(1, total - warmup))))

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.to(memory_format=torch.channels_last).train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x, m = x_all[idx], max_shift
            if m > 0:  # shift each image by (dy, dx) in [-m, m]^2, zero fill
                n, c, h, w = x.shape
                dy = torch.randint(0, 2 * m + 1, (n,), generator=gen)
                dx = torch.randint(0, 2 * m + 1, (n,), generator=gen)
                rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
                cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
                x = F.pad(x, (m,) * 4)[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
            out = model(preprocess(x, cfg).contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(out, y_all[idx], label_smoothing=label_smoothing)
            if teacher_term is not None:
                loss = (1.0 - alpha) * loss + alpha * teacher_term(x, out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@pytest.mark.parametrize("name", ["resnet-s2", "mobilenet-s1", "vit-s3"])
def test_training_reproduces_the_loop_of_the_packaged_weights(name):
    """Two epochs (warm-up, then cosine; two permutations) give exactly the state dict of the frozen loop."""
    info = zoo.ZOO_MODELS[name]
    arch = zoo.ZOO_ARCHS[info.arch]
    r = arch.recipe
    data = load_digits_set("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(info.seed)
        ref = reference_fit(arch.build(), arch.data_config, data.images, data.labels, seed=info.seed, epochs=2, lr=r.lr,
                            batch_size=r.batch_size, weight_decay=r.weight_decay, label_smoothing=r.label_smoothing,
                            max_shift=r.max_shift)
    state, _ = zoo.train_zoo_model(name, epochs=2)
    assert _same_state(state, ref.state_dict())


def test_lr_schedule_and_shift():
    factors = [train.lr_factor(s, total=10, warmup=2) for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors == sorted(factors[:2]) + sorted(factors[2:], reverse=True)
    assert factors[-1] > 0.0
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 4)
    assert train.random_shift(x, 0, gen) is x and torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())
    y = train.random_shift(x, 1, gen)
    assert y.shape == x.shape
    for a, b in zip(x, y):  # each image is x moved by at most one pixel, zero filled
        assert any(torch.equal(b, F.pad(a, (1,) * 4)[:, 1 + dy : 5 + dy, 1 + dx : 5 + dx])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
