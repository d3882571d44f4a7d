"""A .pt2 runs only when its program is pure tensor operators (satkit/models/export_check.py).

The command-level tests (every command x every hostile file) are in test_untrusted_models.py;
here each check is tried on its own, each on an input built here: a graph that writes a file,
in-place writes into inputs and weights, foreign and Python-calling operators, shape
expressions and guard code that are Python, zip bombs. And the safe way in works: each
digits zoo architecture, exported with torch.export, loads and gives the zoo model's logits.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from satkit.errors import ModelError
from satkit.models import ModelOptions, load_model
from satkit.models.export_check import (
    ALLOWED_ATEN,
    check_expression,
    check_graph_module,
    check_guards,
    check_serialized_program,
)
from satkit.models.untrusted import check_pt2_archive

import hostile
from conftest import TinyCNN, save_program


def _export(module: nn.Module, shape=(2, 1, 16, 16)):
    return torch.export.export(module.eval(), (torch.zeros(shape),))


# ------------------------------------------------------------------ operators of the loaded graph


def test_graph_check_refuses_from_file_on_the_loaded_graph(tmp_path):
    """The second wall holds alone: a graph calling aten.from_file is refused before any call."""
    marker = tmp_path / "written"
    path = hostile.pt2_from_file(tmp_path / "ff.pt2", marker)
    ep = torch.export.load(str(path))  # loading alone does not run the graph
    with pytest.raises(ModelError, match="from_file"):
        check_graph_module(ep.graph_module, "ff.pt2")
    assert not marker.exists()


class _AddsIntoInput(nn.Module):
    def forward(self, x):
        x.add_(1.0)
        return x.flatten(1)


class _AddsIntoViewOfInput(nn.Module):
    def forward(self, x):
        x.view(-1).mul_(2.0)
        return x.flatten(1)


class _CountsInABuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        self.calls.add_(1.0)
        return self.fc(x.flatten(1)) + self.calls


@pytest.mark.parametrize("module", [_AddsIntoInput, _AddsIntoViewOfInput])
def test_inplace_write_into_an_input_is_refused(module):
    ep = _export(module())
    with pytest.raises(ModelError, match="writes into its input"):
        check_graph_module(ep.graph_module, "m.pt2")


def test_inplace_write_into_a_buffer_is_refused():
    """A model whose output depends on how often it ran (state kept across calls) is not a fixed classifier."""
    ep = _export(_CountsInABuffer())
    with pytest.raises(ModelError, match="writes into its input, a weight or a buffer"):
        check_graph_module(ep.graph_module, "m.pt2")


class _InplaceOnIntermediates(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.conv(x))
        y += 1.0
        return y.flatten(1)


def test_inplace_on_its_own_intermediates_is_allowed():
    ep = _export(_InplaceOnIntermediates())
    assert any(str(n.target).startswith("aten.relu_") for n in ep.graph.nodes)
    check_graph_module(ep.graph_module, "m.pt2")


def test_operators_outside_aten_are_refused():
    lib = torch.library.Library("satkit_test_ns", "DEF")  # noqa: F841 (kept alive for the test)
    lib.define("double(Tensor x) -> Tensor")
    lib.impl("double", lambda x: x * 2, "CompositeExplicitAutograd")
    lib.impl("double", lambda x: torch.empty_like(x), "Meta")

    class M(nn.Module):
        def forward(self, x):
            return torch.ops.satkit_test_ns.double(x).flatten(1)

    ep = _export(M())
    with pytest.raises(ModelError, match="satkit_test_ns::double"):
        check_graph_module(ep.graph_module, "m.pt2")


def test_higher_order_operators_are_refused():
    class M(nn.Module):
        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (x,)).flatten(1)

    ep = _export(M())
    with pytest.raises(ModelError, match="calls"):
        check_graph_module(ep.graph_module, "m.pt2")


def test_the_allow_list_holds_no_file_or_storage_operator():
    for name in ("from_file", "set_", "save", "_nested_tensor_from_mask", "to_mkldnn", "_copy_from"):
        assert name not in ALLOWED_ATEN


# ------------------------------------------------------------------ text torch evaluates


@pytest.mark.parametrize("expr", [
    "Symbol('s77', positive=True, integer=True)",
    "Mul(Integer(197), Symbol('s0', positive=True, integer=True))",
    "FloorDiv(Add(Symbol('s1', integer=True), Integer(-1)), Integer(2))",
    "Max(1, s0)",
])
def test_torchs_shape_expressions_pass(expr):
    check_expression(expr, "m.pt2")


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "Symbol('s0').__class__",
    "Symbol('x; import os')",
    "open('/tmp/f', 'w')",
    "Pow(Integer(2), Integer(1000000000000))",
    "LShift(Integer(1), Integer(1000000000000))",
    "s0[0]",
    "lambda: 0",
    "Integer(" + "9" * 30 + ")",
    "Add(" * 3000,
])
def test_shape_expressions_that_are_python_are_refused(expr):
    with pytest.raises(ModelError, match="shape expression"):
        check_expression(expr, "m.pt2")


def test_size_guards_pass_and_code_guards_are_refused():
    check_guards(["L['x'].size()[0] >= 2", "L['x'].size()[1] == 3", "math.isnan(L['y'])"], "m.pt2")
    for bad in ["open('/tmp/f', 'w') or True", "L['x'].__class__", "L['x'].size()[0] == exit()",
                "__import__('os')", 'L["a\'] + 1"]']:
        with pytest.raises(ModelError, match="guard code"):
            check_guards([bad], "m.pt2")


def test_serialized_program_check_walks_nested_nodes():
    node = {"target": "torch.ops.aten.from_file.default", "inputs": [], "outputs": []}
    nested = {"graph_module": {"graph": {"nodes": [{"target": "torch.ops.higher_order.cond", "inputs": [
        {"arg": {"as_graph": {"graph": {"nodes": [node]}}}}], "outputs": []}]}}}
    with pytest.raises(ModelError, match="higher_order.cond|from_file"):
        check_serialized_program(nested, "m.pt2")


# ------------------------------------------------------------------ archives that exhaust memory


def _rewrite_entry(src: Path, dst: Path, suffix: str, data: bytes, compress: int) -> Path:
    with zipfile.ZipFile(src) as zin:
        items = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(dst, "w") as zout:
        for name, blob in items:
            if name.endswith(suffix):
                zout.writestr(name, data, compress_type=compress)
            else:
                zout.writestr(name, blob, compress_type=zipfile.ZIP_STORED)
    return dst


def test_zip_bomb_entry_is_refused_before_it_is_read(tmp_path):
    base = hostile.clean_pt2(tmp_path / "base.pt2")
    # 64 MiB of JSON whitespace deflates to ~64 KiB: an entry far larger than the archive
    cfg = b'{"config": {}}' + b" " * (64 * 2**20)
    bomb = _rewrite_entry(base, tmp_path / "bomb.pt2", "model_weights_config.json", cfg, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ModelError, match="compressed or larger than the file"):
        check_pt2_archive(bomb)


def test_an_entry_claiming_more_bytes_than_the_file_is_refused(tmp_path):
    base = hostile.clean_pt2(tmp_path / "base.pt2")
    raw = bytearray(base.read_bytes())
    # patch the central directory's uncompressed size of that entry to 4 GiB - 1
    start = 0
    while True:
        cd = raw.find(b"PK\x01\x02", start)
        assert cd >= 0
        name_len = int.from_bytes(raw[cd + 28:cd + 30], "little")
        if raw[cd + 46:cd + 46 + name_len].decode().endswith("models/model.json"):
            break
        start = cd + 4
    raw[cd + 24:cd + 28] = (2**32 - 1).to_bytes(4, "little")
    bad = tmp_path / "big.pt2"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="damaged torch.export archive"):
        check_pt2_archive(bad)


# ------------------------------------------------------------------ the safe way in


@pytest.mark.parametrize("zoo_name", ["digits/resnet-s1", "digits/vit-s1", "digits/convnext-s1", "digits/mixer-s1",
                                      "digits/convmixer-s1", "digits/mobilenet-s1"])
def test_each_zoo_architecture_exported_loads_and_matches(zoo_name, tmp_path):
    """A user's own nn.Module -> torch.export -> .pt2 -> satkit, for each zoo family: same logits."""
    zoo = load_model(zoo_name)
    cfg = zoo.module.cfg
    net = zoo.module.model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(net, (torch.zeros(2, *cfg.input_size),), dynamic_shapes=({0: batch},))
    path = tmp_path / "mine.pt2"
    torch.export.save(ep, str(path))
    opts = ModelOptions(mean=cfg.mean, std=cfg.std, input_size=cfg.input_size, interpolation=cfg.interpolation)
    mine = load_model(str(path), opts)
    x = torch.rand(5, 1, 16, 16)  # digits canvas pixels in [0, 1]
    with torch.inference_mode():
        assert torch.allclose(mine.module(x), zoo.module(x), atol=1e-5)


def test_dynamic_shape_export_of_a_tiny_cnn_round_trips(tmp_path):
    net = TinyCNN(seed=3).eval()
    lm = load_model(str(save_program(net, tmp_path / "tiny.pt2")))
    x = torch.rand(4, 1, 24, 20)
    with torch.inference_mode():
        assert torch.allclose(lm.module(x), net(x), atol=1e-6)


def test_program_json_of_real_exports_passes(tmp_path):
    """The serialized-program check accepts what torch writes for a dynamic-shape export (srepr expressions)."""
    path = save_program(TinyCNN(seed=1), tmp_path / "t.pt2")
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("models/model.json"))
        program = json.loads(z.read(name))
    assert "Symbol(" in json.dumps(program)  # the case the expression check must accept
    check_serialized_program(program, str(path))
