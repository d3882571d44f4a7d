from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Tests never touch the user's cache; zoo weights come from the package."""
    home = tmp_path_factory.mktemp("satkit_home")
    old = os.environ.get("SATKIT_HOME")
    os.environ["SATKIT_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield home
    if old is None:
        os.environ.pop("SATKIT_HOME", None)
    else:
        os.environ["SATKIT_HOME"] = old


class TinyCNN(nn.Module):
    """A few-thousand-parameter CNN for unit tests (random init, seeded)."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = nn.functional.adaptive_avg_pool2d(x, 4)
        return self.fc(x.flatten(1))


def save_program(module: nn.Module, path, channels: int | None = None):
    """Save ``module`` as a ``.pt2`` (torch.export) with dynamic batch, height and width: a user's own model
    the safe way (TorchScript and pickles run code and need --allow-code-execution)."""
    module = module.eval()
    if channels is None:
        channels = next(p for p in module.parameters() if p.ndim == 4).shape[1]
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("h", min=4, max=2048),
            3: torch.export.Dim("w", min=4, max=2048)}
    ep = torch.export.export(module, (torch.zeros(2, channels, 16, 16),), dynamic_shapes=(dims,))
    torch.export.save(ep, str(path))
    return path


def tiny_model(name: str = "tiny", input_size=(1, 16, 16), seed: int = 0, num_classes: int = 10) -> LoadedModel:
    cfg = DataConfig(input_size=input_size, mean=(0.5,) * input_size[0], std=(0.5,) * input_size[0])
    return LoadedModel(
        name=name, spec=name, module=ClassifierWrapper(TinyCNN(input_size[0], num_classes, seed), cfg),
        num_classes=num_classes, weights_id=f"test:{name}:{seed}", kind="test",
    )


@pytest.fixture
def tiny():
    return tiny_model


@pytest.fixture(scope="session")
def digits_small():
    from satkit.data import load_data

    return load_data("digits", n=60, seed=0)

