"""Hostile model files never run code: every model-taking command x every crafted file (tests/hostile.py).

Each crafted file writes a marker when unpickled, loaded or run (pickles; TorchScript
and .pt2 programs writing through ``aten.from_file``, guard code, shape expressions);
a command must exit 2 with one line, leave no marker and create no output. The
crafted files are checked to be really hostile: plain torch runs their code (in a
subprocess).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
from cli_helpers import assert_clean_error, run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, build, suffix in hostile.HOSTILE_MODELS:
        marker = root / f"{name}.ran"
        out[name] = (build(root / f"{name}{suffix}", marker), marker)
    return out


@pytest.fixture(scope="module")
def attack_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("attackfile")
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", d / "a.safetensors")
    return d / "a.safetensors"


def _study_naming(tmp: Path, model: Path, attack_file: Path) -> Path:
    """A study directory whose study.json names the hostile file next to a zoo model."""
    d = tmp / "study"
    (d / "attacks").mkdir(parents=True)
    from satkit.formats import read_satkit_file

    prov = read_satkit_file(attack_file, "satkit.attack").provenance
    from satkit.study import slug

    for m in (str(model), "digits/resnet-s1"):
        shutil.copy(attack_file, d / "attacks" / f"{slug(m)}.safetensors")
    (d / "study.json").write_text(json.dumps({
        "models": [str(model), "digits/resnet-s1"], "data": "digits", "n": 20, "data_seed": 0, "canvas": None,
        "attack": prov["attack"] | {"storage": "uint8"}, "eps_s": 1.0, "fingerprint": prov["data"]["fingerprint"],
    }))
    return d


COMMANDS = {
    "attack": lambda m, t, a: ["attack", m, "--n", 20, "--steps", 1, "-o", t / "out.safetensors"],
    "transfer": lambda m, t, a: ["transfer", m, a, "-o", t / "out.csv"],
    "logits": lambda m, t, a: ["logits", m, "--n", 20, "-o", t / "out.safetensors"],
    "approx-new": lambda m, t, a: ["approx", m, "--models", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", t / "out.csv"],
    "approx-known": lambda m, t, a: ["approx", "digits/resnet-s2", "--models", f"digits/resnet-s1,{m}", "--n", 20,
                                     "--steps", 1, "-o", t / "out.csv"],
    "approx-study": lambda m, t, a: ["approx", "digits/resnet-s2", "--study", _study_naming(t, Path(m), a), "-o", t / "out.csv"],
    "distill-teacher": lambda m, t, a: ["distill", "--teacher", m, "--student", "digits/resnet", "--epochs", 1,
                                        "-o", t / "out.safetensors"],
    "study": lambda m, t, a: ["study", m, "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", t / "out"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", [h[0] for h in hostile.HOSTILE_MODELS])
def test_hostile_model_never_runs_code(files, attack_file, tmp_path, command, kind):
    path, marker = files[kind]
    args = COMMANDS[command](str(path), tmp_path, attack_file)
    r = run(*args, ok=False)
    assert not marker.exists(), f"{kind} ran code through `satkit {command}`"
    assert_clean_error(r)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pt2-pickled-weight", "pt2-sample-inputs", "pt2-opaque-constant"])
def test_crafted_pt2_is_really_hostile(files, kind):
    """Plain torch.export.load runs the payload: the fixtures test what they claim to."""
    path, marker = files[kind]
    code = f"import torch\ntry:\n    torch.export.load({str(path)!r})\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    try:
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind,load", [
    ("torchscript-writes-file", "torch.jit.load(p)"),
    ("pt2-from-file", "torch.export.load(p).module()"),
    ("pt2-guard-code", "torch.export.load(p).module()"),
    ("pt2-shape-expression", "torch.export.load(p).module()"),
])
def test_crafted_programs_are_really_hostile(files, kind, load):
    """Loaded and called the plain torch way, each program writes its marker: no pickle is involved."""
    path, marker = files[kind]
    code = f"import torch\np = {str(path)!r}\ntry:\n    {load}(torch.zeros(2, 1, 16, 16))\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    try:
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_clean_pt2_loads_and_allow_code_opts_in(tmp_path):
    import torch

    from satkit.errors import ModelError
    from satkit.models import ModelOptions, load_model

    lm = load_model(str(hostile.clean_pt2(tmp_path / "ok.pt2")))
    assert lm.module(torch.zeros(3, 1, 16, 16)).shape == (3, 10)
    marker = tmp_path / "ran"
    bad = hostile.pt2_sample_inputs(tmp_path / "bad.pt2", marker)
    with pytest.raises(ModelError, match="--allow-code-execution"):
        load_model(str(bad))
    assert not marker.exists()
    # the user's explicit opt-in is honoured: the file's code runs, as torch would run it
    # (this archive then fails to load: its "sample inputs" are the payload)
    with pytest.raises(ModelError, match="cannot load"):
        load_model(str(bad), ModelOptions(allow_code=True))
    assert marker.exists()


def test_guard_catches_what_the_archive_check_misses(tmp_path):
    """The audit-hook layer alone refuses a pickled weight (the archive check is a second wall, not the only one)."""
    import torch

    from satkit.errors import ModelError
    from satkit.models.untrusted import no_code_from_files

    marker = tmp_path / "ran"
    bad = hostile.pt2_pickled_weight(tmp_path / "w.pt2", marker)
    with pytest.raises(ModelError, match="unpickle"):
        with no_code_from_files(bad):
            torch.export.load(str(bad))
    assert not marker.exists()
