"""A factory of crafted model files that run code when a careless loader opens them.

Each payload writes a marker file; a test asserts the marker never appears.
New model formats get a builder here so every command is tried with them.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn as nn


class _Payload:
    """Unpickling this calls exec(): the marker file appears."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self):
        return (exec, (self.code,))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker), protocol=2)


def evil_torch_save(marker: Path) -> bytes:
    """A torch.save zip archive whose data.pkl runs code."""
    buf = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buf)
    return buf.getvalue()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def clean_pt2(path: Path) -> Path:
    """A benign torch.export archive of a small digits-sized classifier (dynamic batch)."""
    torch.manual_seed(0)
    m = _Net().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(m, (torch.zeros(2, 1, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin:
        items = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    items = edit(items)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for name, data in items.items():
            zout.writestr(name, data)
    return dst


def _member(items: dict, suffix: str) -> str:
    return next(n for n in items if n.endswith(suffix))


def pt2_pickled_weight(path: Path, marker: Path) -> Path:
    """A weights entry marked ``use_pickle`` whose bytes run code (torch.load(weights_only=False))."""
    base = clean_pt2(path.with_suffix(".base.pt2"))

    def edit(items):
        cfg_name = _member(items, "data/weights/model_weights_config.json")
        cfg = json.loads(items[cfg_name])
        first = next(iter(cfg["config"]))
        cfg["config"][first]["use_pickle"] = True
        items[cfg_name] = json.dumps(cfg).encode()
        items[_member(items, "data/weights/" + cfg["config"][first]["path_name"])] = evil_pickle(marker)
        return items

    return _rewrite(base, path, edit)


def pt2_sample_inputs(path: Path, marker: Path) -> Path:
    """Clean configs, but the sample inputs (weights_only=True, then a weights_only=False fallback) run code."""
    base = clean_pt2(path.with_suffix(".base.pt2"))

    def edit(items):
        items[_member(items, "data/sample_inputs/model.pt")] = evil_torch_save(marker)
        return items

    return _rewrite(base, path, edit)


def pt2_opaque_constant(path: Path, marker: Path) -> Path:
    """An opaque constant (read with pickle.loads)."""
    base = clean_pt2(path.with_suffix(".base.pt2"))

    def edit(items):
        cfg_name = _member(items, "data/constants/model_constants_config.json")
        prefix = cfg_name.split("data/")[0]
        items[cfg_name] = json.dumps({"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                                          "use_pickle": True, "tensor_meta": None}}}).encode()
        items[prefix + "data/constants/opaque_obj_0"] = evil_pickle(marker)
        return items

    return _rewrite(base, path, edit)


def pt2_legacy(path: Path, marker: Path) -> Path:
    """The pre-2.7 layout torch.export.load still falls back to (serialized_*.pt pickles)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", "7.3")
        z.writestr("serialized_exported_program.json", b"{}")
        z.writestr("serialized_state_dict.pt", evil_torch_save(marker))
        z.writestr("serialized_constants.pt", evil_torch_save(marker))
        z.writestr("serialized_example_inputs.pt", evil_torch_save(marker))
    return path


def pickled_model(path: Path, marker: Path) -> Path:
    """A plain pickle (the classic .pt/.pth/.bin attack)."""
    path.write_bytes(evil_pickle(marker))
    return path


def torch_save_archive(path: Path, marker: Path) -> Path:
    """A torch.save zip archive (what `torch.save(model)` writes) whose data.pkl runs code."""
    path.write_bytes(evil_torch_save(marker))
    return path


def fake_torchscript(path: Path, marker: Path) -> Path:
    """A torch.save archive dressed as TorchScript (has code/ and constants.pkl)."""
    with zipfile.ZipFile(io.BytesIO(evil_torch_save(marker))) as zin:
        items = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    prefix = next(iter(items)).split("/")[0]
    items[f"{prefix}/code/__torch__.py"] = b"def forward(self, x):\n  return x\n"
    items[f"{prefix}/constants.pkl"] = evil_pickle(marker)
    with zipfile.ZipFile(path, "w") as z:
        for n, d in items.items():
            z.writestr(n, d)
    return path


class _WritesFile(nn.Module):
    """A classifier whose forward maps a file read-write and fills it (``torch.from_file(shared=True)``)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        t = torch.from_file(self.path, shared=True, size=16, dtype=torch.uint8)
        t.fill_(65)
        # the result feeds the output, so no compiler drops the write as dead code
        return self.fc(x.flatten(1)) + t[:1].float() * 0


def torchscript_writes_file(path: Path, marker: Path) -> Path:
    """TorchScript is a program: its forward creates and writes ``marker`` through aten.from_file."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_WritesFile(str(marker))).save(str(path))
    return path


def pt2_from_file(path: Path, marker: Path) -> Path:
    """A clean export with aten.from_file + aten.fill_ spliced into its graph (no pickle anywhere)."""
    torch.manual_seed(0)
    m = _Net().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(m, (torch.zeros(2, 1, 16, 16),), dynamic_shapes=({0: batch},))
    g = ep.graph
    out = next(n for n in g.nodes if n.op == "output")
    with g.inserting_before(out):
        f = g.call_function(torch.ops.aten.from_file.default, (str(marker),),
                            {"shared": True, "size": 16, "dtype": torch.uint8})
        f.meta["val"] = torch.empty(16, dtype=torch.uint8, device="meta")
        w = g.call_function(torch.ops.aten.fill_.Scalar, (f, 66))
        w.meta["val"] = torch.empty(16, dtype=torch.uint8, device="meta")
    ep.graph_module.recompile()
    torch.export.save(ep, str(path))
    return path


def _edit_program(path: Path, edit) -> Path:
    base = clean_pt2(path.with_suffix(".base.pt2"))

    def edit_items(items):
        name = _member(items, "models/model.json")
        program = json.loads(items[name])
        edit(program)
        items[name] = json.dumps(program).encode()
        return items

    return _rewrite(base, path, edit_items)


def pt2_guard_code(path: Path, marker: Path) -> Path:
    """Guard code in the program's JSON, which ExportedProgram.module() exec()s."""
    code = f"open({str(marker)!r}, 'w').write('pwned') or True"
    return _edit_program(path, lambda prog: prog.__setitem__("guards_code", [code]))


def pt2_shape_expression(path: Path, marker: Path) -> Path:
    """A symbolic size whose expression text runs code when torch's deserializer sympify()s it."""
    code = f"Symbol('s77', positive=True, integer=True) + 0*len(open({str(marker)!r}, 'w').write('pwned') * 'a')"

    def edit(prog):
        sizes = prog["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        sizes[0]["as_expr"]["expr_str"] = code

    return _edit_program(path, edit)


# (name, builder, file suffix): every extension satkit accepts for a model file
HOSTILE_MODELS = [
    ("pt2-pickled-weight", pt2_pickled_weight, ".pt2"),
    ("pt2-sample-inputs", pt2_sample_inputs, ".pt2"),
    ("pt2-opaque-constant", pt2_opaque_constant, ".pt2"),
    ("pt2-legacy", pt2_legacy, ".pt2"),
    ("pickle-pt", pickled_model, ".pt"),
    ("pickle-pth", pickled_model, ".pth"),
    ("pickle-bin", pickled_model, ".bin"),
    ("torch-save-pt", torch_save_archive, ".pt"),
    ("fake-torchscript-ts", fake_torchscript, ".ts"),
    ("pickle-as-safetensors", pickled_model, ".safetensors"),
    ("torchscript-writes-file", torchscript_writes_file, ".pt"),
    ("pt2-from-file", pt2_from_file, ".pt2"),
    ("pt2-guard-code", pt2_guard_code, ".pt2"),
    ("pt2-shape-expression", pt2_shape_expression, ".pt2"),
]
