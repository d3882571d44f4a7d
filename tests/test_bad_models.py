"""Models and data that do not fit, and study inputs that cannot work: refused before any work, one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.cli_helpers import run_bad_case
from tests.conftest import TinyCNN, save_program
from tests.hostile import clean_pt2

runner = CliRunner()


class _Fixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.fc(x.reshape(1, -1))  # batch size 1 only


@pytest.fixture(scope="module")
def wm(tmp_path_factory):
    d = tmp_path_factory.mktemp("badmodels")
    save_program(TinyCNN(seed=1), d / "gray.pt2")  # 1-channel model without a data config
    ep = torch.export.export(_Fixed().eval(), (torch.zeros(1, 1, 16, 16),))  # static batch of 1
    torch.export.save(ep, str(d / "fixed.pt2"))
    clean_pt2(d / "ok.pt2")
    for cls in ("a", "b"):
        (d / "rgb" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(d / "rgb" / cls / f"{i}.png")
    for sub in ("x", "y"):  # two files with one stem: one name in the matrix
        (d / sub).mkdir()
        save_program(TinyCNN(seed=2), d / sub / "m.pt2")
    return d


CASES = [
    ("timm-imagenet-model-on-digits", ["attack", "resnet18", "--random-init", "--n", "20", "--steps", "1", "-o", "{out}.safetensors"],
     ["1000 classes", "digits", "--data"]),
    ("export-fixed-batch", ["attack", "{d}/fixed.pt2", "--n", "20", "--steps", "1", "-o", "{out}.safetensors"], ["batch size", "dynamic"]),
    ("gray-model-on-rgb-folder", ["attack", "{d}/gray.pt2", "--data", "{d}/rgb", "--canvas", "16", "--steps", "1", "-o", "{out}.safetensors"],
     ["channel"]),
    ("gray-model-on-rgb-transfer-logits", ["logits", "{d}/gray.pt2", "--data", "{d}/rgb", "--canvas", "16", "-o", "{out}.safetensors"], ["channel"]),
    ("study-two-files-one-stem", ["study", "{d}/x/m.pt2", "{d}/y/m.pt2", "--n", "20", "--steps", "1", "-o", "{out}"], ["both get the name 'm'"]),
    ("study-eps-s-nan", ["study", "{d}/gray.pt2", "--eps-s", "nan", "--n", "20", "-o", "{out}"], ["--eps-s"]),
    ("study-k-zero", ["study", "{d}/gray.pt2", "-k", "0", "--n", "20", "-o", "{out}"], ["-k"]),
    ("approx-study-not-a-study", ["approx", "{d}/ok.pt2", "--study", "{d}/rgb", "-o", "{out}.csv"], ["not a study directory"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_model(wm, tmp_path, case):
    out = str(tmp_path / "out")
    run_bad_case(case, wm, tmp_path, outputs_if=lambda p: p.startswith(out) and "." in p[len(out):])
    attacks = tmp_path / "out" / "attacks"
    assert not attacks.exists() or not list(attacks.iterdir()), f"{case[0]}: work was done"
