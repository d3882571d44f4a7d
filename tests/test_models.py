"""Model specs: timm names, weights files with --arch, TorchScript, torch.export, pickles."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from satkit.errors import ModelError
from satkit.models import ModelOptions, load_model
from satkit.models.wrapper import ClassifierWrapper, DataConfig
from tests.conftest import TinyCNN


def test_wrapper_resizes_normalizes_and_freezes():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.flatten(1)[:, :10]

    w = ClassifierWrapper(Probe(), DataConfig((3, 8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    x = torch.full((2, 1, 16, 16), 0.75, requires_grad=True)
    out = w(x)
    assert seen["x"].shape == (2, 3, 8, 8)  # grey -> 3 channels, 16 -> 8 px
    assert torch.allclose(seen["x"], torch.ones_like(seen["x"]))  # (0.75 - 0.5) / 0.25
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradient flows through preprocessing
    w.train()
    assert not w.training


def test_timm_random_init_and_data_config():
    lm = load_model("test_vit", ModelOptions(pretrained=False))
    assert lm.kind == "timm" and lm.num_classes > 0 and not lm.module.training
    assert all(not p.requires_grad for p in lm.module.parameters())
    assert lm.data_config.input_size[0] == 3
    out = lm.module(torch.rand(2, 3, 40, 40))  # canvas 40 px, resized inside
    assert out.shape == (2, lm.num_classes)


def test_unknown_timm_name():
    with pytest.raises(ModelError, match="unknown model 'resnet_does_not_exist'"):
        load_model("resnet_does_not_exist")


def test_pretrained_offline_is_a_clear_error():
    with pytest.raises(ModelError, match="cannot be downloaded"):
        load_model("test_vit.r160_in1k")


def test_safetensors_state_dict_with_timm_arch(tmp_path):
    import timm

    m = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    lm = load_model(str(tmp_path / "w.safetensors"), ModelOptions(arch="test_resnet"))
    assert lm.num_classes == 7 and lm.name == "w" and lm.weights_id.startswith("sha256:")
    loaded = lm.module.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in m.state_dict().items())
    c, h, w = lm.data_config.input_size
    x = torch.rand(2, c, h, w)  # at the model's own size: no resize, only normalization
    mean, std = torch.tensor(lm.data_config.mean).view(1, -1, 1, 1), torch.tensor(lm.data_config.std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(lm.module(x), m.eval()((x - mean) / std), atol=1e-5)


def test_safetensors_needs_arch_and_must_fit(tmp_path):
    save_file({"a": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelError, match="--arch"):
        load_model(str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelError, match="does not fit --arch test_resnet"):
        load_model(str(tmp_path / "w.safetensors"), ModelOptions(arch="test_resnet"))


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope.pt"))


def test_torchscript_and_export(tmp_path):
    net = TinyCNN().eval()
    x = torch.rand(3, 1, 16, 16)
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    with pytest.raises(ModelError, match="--allow-code-execution"):  # a TorchScript file is a program: opt-in only
        load_model(str(tmp_path / "m.pt"))
    lm = load_model(str(tmp_path / "m.pt"), ModelOptions(allow_code=True))
    assert lm.kind == "torchscript"
    with torch.no_grad():
        assert torch.allclose(lm.module(x), net(x), atol=1e-6)
    ep = torch.export.export(net, (x,))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    lm2 = load_model(str(tmp_path / "m.pt2"))  # a torch.export program loads without opt-in
    assert lm2.kind == "export"
    with torch.no_grad():
        assert torch.allclose(lm2.module(x), net(x), atol=1e-6)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_refused_without_opt_in_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    # torch.save of a malicious object: unpickling would create `marker`
    torch.save({"model": _Evil(str(marker))}, str(tmp_path / "evil.pt"))
    with open(tmp_path / "evil.pth", "wb") as fh:  # and a plain (legacy) pickle
        pickle.dump(_Evil(str(marker)), fh)
    for name in ("evil.pt", "evil.pth"):
        with pytest.raises(ModelError, match="--allow-code-execution"):
            load_model(str(tmp_path / name))
        assert not marker.exists()
    # a state dict with --arch is read with weights_only=True: the payload is refused too
    with pytest.raises(ModelError):
        load_model(str(tmp_path / "evil.pt"), ModelOptions(arch="digits/resnet"))
    assert not marker.exists()


def test_pickle_with_opt_in(tmp_path):
    torch.save(TinyCNN(), str(tmp_path / "full.pt"))
    lm = load_model(str(tmp_path / "full.pt"), ModelOptions(allow_code=True))
    assert lm.kind == "pickle"
    assert lm.module(torch.rand(1, 1, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("spec,arch,form", [
    ("digits/resnet-s1", None, "digits/<name>"),
    ("digits/mine.pt2", None, "FILE.pt2"),
    ("w.safetensors", None, "FILE.safetensors"),
    ("m.pt2", "resnet18", "FILE.pt2"),
    ("w.pt", "resnet18", "state dict with --arch"),
    ("w.pth", "digits/resnet", "state dict with --arch"),
    ("m.pt", None, "TorchScript or pickled"),
    ("./m.ts", None, "TorchScript or pickled"),
    ("hf-hub:timm/resnet18.a1_in1k", None, "hf-hub:"),
    ("resnet50.a1_in1k", None, "timm name"),
])
def test_one_table_of_spec_forms_first_match_wins(spec, arch, form):
    from satkit.models.registry import scheme_of

    assert form in scheme_of(spec, ModelOptions(arch=arch)).form

