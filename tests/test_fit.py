"""check_fits: a model that cannot run on the data, or does not fit its classes, is refused
with one line that says what to do -- before any work."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from satkit.errors import ModelError
from satkit.models import ModelOptions, load_model
from satkit.models.fit import check_fits
from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel
from tests.conftest import TinyCNN, save_program, tiny_model


@pytest.fixture(scope="module")
def digits():
    from satkit.data import load_data

    return load_data("digits", n=20, seed=0)  # uint8 (20, 1, 16, 16), 10 classes


def _refused(lm, sample, num_classes, source, *words):
    with pytest.raises(ModelError) as ei:
        check_fits(lm, sample, num_classes, source)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _program(module: nn.Module, path) -> str:
    return str(save_program(module, path))  # a .pt2 with dynamic batch, height and width


def _wrapped(module: nn.Module, name: str) -> LoadedModel:
    cfg = DataConfig(input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    return LoadedModel(name=name, spec=name, module=ClassifierWrapper(module, cfg), num_classes=10, weights_id="test", kind="test")


def test_fitting_models_pass(digits, tmp_path):
    check_fits(tiny_model(), digits.images[:4], 10, "digits")
    check_fits(tiny_model(), as_float32(digits.images[:3]), 10, "digits")  # float storage, odd k
    check_fits(tiny_model(), digits.images[:1], 10, "digits")  # one image is enough
    lm = load_model(_program(TinyCNN(1), tmp_path / "m.pt2"))
    assert lm.num_classes == 0
    check_fits(lm, digits.images[:4], 10, "digits")
    assert lm.num_classes == 10  # learned from the forward, as ensure_num_classes does


def as_float32(u8):
    return u8.to(torch.float32) / 255


def test_export_with_static_batch_is_refused(digits, tmp_path):
    ep = torch.export.export(TinyCNN(1).eval(), (torch.zeros(1, 1, 16, 16),))  # no dynamic dims
    torch.export.save(ep, str(tmp_path / "static.pt2"))
    lm = load_model(str(tmp_path / "static.pt2"))
    _refused(lm, digits.images[:4], 10, "digits", "static", "batch size 1 but not 2", "fixed batch size", "torch.export.Dim")
    ep = torch.export.export(TinyCNN(1).eval(), (torch.zeros(4, 1, 16, 16),))  # fixed at 4: neither 1 nor 2 runs
    torch.export.save(ep, str(tmp_path / "four.pt2"))
    _refused(load_model(str(tmp_path / "four.pt2")), digits.images[:4], 10, "digits", "only on batch size 4", "torch.export.Dim")


def test_export_with_dynamic_batch_passes(digits, tmp_path):
    from tests.hostile import clean_pt2

    lm = load_model(str(clean_pt2(tmp_path / "dyn.pt2")))
    check_fits(lm, digits.images[:4], 10, "digits")
    assert lm.num_classes == 10


def test_export_with_fixed_image_size_names_it(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(TinyCNN(1).eval(), (torch.zeros(2, 1, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    small = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    _refused(load_model(str(tmp_path / "m.pt2")), small, 10, "small/", "fixed height 16", "8x8", "--input-size")


def test_one_channel_model_fed_rgb(tmp_path):
    path = _program(TinyCNN(1), tmp_path / "gray.pt2")
    rgb = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    _refused(load_model(path), rgb, 10, "photos/", "1-channel", "3-channel", "photos/", "--data", "--input-size 1,16,16")
    # the suggested fix works: with an input size the wrapper converts RGB to gray
    check_fits(load_model(path, ModelOptions(input_size=(1, 16, 16))), rgb, 10, "photos/")


def test_three_channel_model_fed_gray_digits(digits, tmp_path):
    _refused(load_model(_program(TinyCNN(3), tmp_path / "rgb.pt2")), digits.images[:4], 10, "digits", "3-channel", "1-channel", "--input-size 3,16,16")


def test_imagenet_model_on_digits_is_refused(digits):
    lm = load_model("resnet18", ModelOptions(pretrained=False))
    assert lm.data_config.input_size[1] > digits.images.shape[-1]  # 224 vs 16: resizing is fine, not the problem
    msg = _refused(lm, digits.images[:2], 10, "digits", "resnet18 has 1000 classes", "digits", "has 10",
                   "ImageNet", "--data /path/to/imagenet/val")
    assert "shape" not in msg
    check_fits(lm, digits.images[:2], 1000, "val/")  # the same model on 1000-class data of any size passes


def test_class_count_mismatch_names_both_counts(digits):
    _refused(tiny_model(num_classes=10), digits.images[:2], 12, "twelve/", "10 classes", "(twelve/) has 12", "--data")
    check_fits(tiny_model(num_classes=10), digits.images[:2], 5, "five/")  # a folder of some of the classes: allowed
    _refused(tiny_model(num_classes=7), digits.images[:2], 10, "digits", "7 classes", "has 10", "digits")
    lm = tiny_model(num_classes=10)
    lm.num_classes = 5  # loaded as one thing, returns another
    _refused(lm, digits.images[:2], 10, "digits", "returns 10 logits", "5-class")


class _NaN(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 10), float("nan"))


class _BadShape(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 10, 1)


class _Tuple(nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 10), None


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom: mat1 and mat2 shapes cannot be multiplied")


def test_bad_outputs_and_errors(digits):
    x = digits.images[:3]
    _refused(_wrapped(_NaN(), "nanny"), x, 10, "digits", "nanny", "NaN/inf", "1 of 1")
    _refused(_wrapped(_BadShape(), "m"), x, 10, "digits", "shape (1, 10, 1)", "(N, classes)")
    _refused(_wrapped(_Tuple(), "m"), x, 10, "digits", "returned a tuple", "(N, classes)")
    _refused(_wrapped(_Boom(), "m"), x, 10, "digits", "m cannot run on digits images of shape 1x16x16",
             "(boom: mat1 and mat2 shapes cannot be multiplied)", "--input-size")
