"""Bad input matrix: each case must give ONE line naming the problem, a non-zero exit,
no traceback, and no output file created or overwritten."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from satkit.cli.app import app
from tests.cli_helpers import run_bad_case
from tests.conftest import TinyCNN, save_program
from tests.test_trust_images import png_1bit

runner = CliRunner()


class NaNNet(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 10), float("nan"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with good and bad files."""
    d = tmp_path_factory.mktemp("bad")
    save_program(TinyCNN(seed=1), d / "good.pt2")
    save_program(TinyCNN(seed=2, num_classes=5), d / "five.pt2")
    save_program(NaNNet(), d / "nan.pt2", channels=1)
    torch.save(TinyCNN(), str(d / "pickled.pt"))
    r = runner.invoke(app, ["attack", str(d / "good.pt2"), "--n", "30", "--steps", "1", "-o", str(d / "adv.safetensors")])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["attack", str(d / "good.pt2"), "--n", "30", "--data-seed", "9", "--steps", "1", "-o", str(d / "adv_other.safetensors")])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["transfer", str(d / "good.pt2"), str(d / "adv.safetensors"), "-o", str(d / "t.csv")])
    r = runner.invoke(app, ["transfer", str(d / "good.pt2"), str(d / "adv_other.safetensors"), "-o", str(d / "t_other.csv")])
    assert r.exit_code == 0, r.stderr
    for name, seed in (("l1", "0"), ("l2", "0"), ("l_other", "9")):
        r = runner.invoke(app, ["logits", str(d / "good.pt2"), "--n", "30", "--data-seed", seed, "--name", name, "-o", str(d / f"{name}.safetensors")])
        assert r.exit_code == 0, r.stderr
    raw = (d / "adv.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "empty.safetensors").write_bytes(b"")
    (d / "text.safetensors").write_text("this is not safetensors")
    save_file({"w": torch.zeros(3)}, str(d / "foreign.safetensors"))
    save_file({"clean": torch.zeros(1)}, str(d / "newer.safetensors"),
              metadata={"format": "satkit.attack", "format_version": "99", "provenance": "{}"})
    save_file({"a": torch.zeros(2)}, str(d / "weights_misfit.safetensors"))
    (d / "folder_empty" / "cat").mkdir(parents=True)
    (d / "folder_flat").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "folder_flat" / "img.png")
    (d / "folder_broken" / "cat").mkdir(parents=True)
    (d / "folder_broken" / "cat" / "bad.jpg").write_bytes(b"\xff\xd8 garbage")
    for name, write in (("folder_float", lambda p: Image.fromarray(np.full((8, 8), 2.5, np.float32)).save(p / "f.tif")),
                        ("folder_int32", lambda p: Image.fromarray(np.full((8, 8), 1000, np.int32)).save(p / "i32.tif")),
                        ("folder_bomb", lambda p: png_1bit(p / "bomb.png", 20000, 20000))):
        (d / name / "cat").mkdir(parents=True)
        write(d / name / "cat")
    (d / "folder_labelled").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "folder_labelled" / "img.png")
    (d / "huge_labels.csv").write_text("filename,label\nimg.png,999999999999\n")
    ro = d / "readonly"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    # a .pt2 whose weights config deflates from ~64 KiB to 64 MiB: refused before anything is inflated
    import zipfile

    with zipfile.ZipFile(d / "good.pt2") as zin, zipfile.ZipFile(d / "bomb.pt2", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("model_weights_config.json"):
                zout.writestr(info.filename, data + b" " * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
            else:
                zout.writestr(info.filename, data)
    (d / "nonsquare.csv").write_text("model,a,b\na,1,2\n")
    (d / "transfer_nocols.csv").write_text("x,y\n1,2\n")
    return d


# (id, args (with {d} for the workspace), words the message must contain, output path or None)
CASES = [
    ("missing-attack-file", ["transfer", "{d}/good.pt2", "{d}/missing.safetensors", "-o", "{out}.csv"], ["no such file"]),
    ("empty-file", ["transfer", "{d}/good.pt2", "{d}/empty.safetensors", "-o", "{out}.csv"], ["empty"]),
    ("truncated-file", ["transfer", "{d}/good.pt2", "{d}/truncated.safetensors", "-o", "{out}.csv"], ["truncated"]),
    ("not-safetensors", ["info", "{d}/text.safetensors"], ["not a readable safetensors"]),
    ("foreign-safetensors", ["info", "{d}/foreign.safetensors"], ["not one satkit wrote"]),
    ("newer-format-version", ["transfer", "{d}/good.pt2", "{d}/newer.safetensors", "-o", "{out}.csv"], ["newer", "upgrade satkit"]),
    ("different-clean-sets-transfer", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "{d}/adv_other.safetensors", "-o", "{out}.csv"],
     ["different clean sets"]),
    ("different-clean-sets-matrix", ["matrix", "{d}/t.csv", "{d}/t_other.csv", "-o", "{out}.csv"], ["different clean sets"]),
    ("labels-out-of-range", ["attack", "{d}/five.pt2", "--n", "20", "--steps", "1", "-o", "{out}.safetensors"], ["5 classes"]),
    ("labels-out-of-range-transfer", ["transfer", "{d}/five.pt2", "{d}/adv.safetensors", "-o", "{out}.csv"], ["5 classes"]),
    ("folder-no-images", ["attack", "{d}/good.pt2", "--data", "{d}/folder_empty", "-o", "{out}.safetensors"], ["no images"]),
    ("folder-no-class-folders", ["attack", "{d}/good.pt2", "--data", "{d}/folder_flat", "-o", "{out}.safetensors"], ["no class sub-folders"]),
    ("unreadable-image", ["attack", "{d}/good.pt2", "--data", "{d}/folder_broken", "-o", "{out}.safetensors"], ["bad.jpg", "cannot decode"]),
    ("image-float-out-of-range", ["attack", "digits/resnet-s1", "--data", "{d}/folder_float", "-o", "{out}.safetensors"], ["f.tif", "mode F", "[0, 1]"]),
    ("image-32-bit-integer", ["attack", "digits/resnet-s1", "--data", "{d}/folder_int32", "-o", "{out}.safetensors"], ["i32.tif", "mode I"]),
    ("image-decompression-bomb", ["attack", "digits/resnet-s1", "--data", "{d}/folder_bomb", "-o", "{out}.safetensors"],
     ["bomb.png", "decompression-bomb limit"]),
    ("labels-huge-class-index", ["attack", "digits/resnet-s1", "--data", "{d}/folder_labelled", "--labels", "{d}/huge_labels.csv", "-o", "{out}.safetensors"],
     ["huge_labels.csv line 2", "1,000,000 classes"]),
    ("unknown-timm-name", ["attack", "resnet_nope_42", "-o", "{out}.safetensors"], ["unknown model"]),
    ("weights-offline", ["attack", "test_vit.r160_in1k", "--n", "10", "-o", "{out}.safetensors"], ["cannot be downloaded"]),
    ("weights-offline-says-what-to-do", ["attack", "resnet18", "-o", "{out}.safetensors"],
     ["timm/resnet18.a1_in1k", "model.safetensors", "models--timm--resnet18.a1_in1k", "HF_HUB_OFFLINE=1", "--random-init", "--arch resnet18"]),
    ("canvas-too-large", ["attack", "{d}/good.pt2", "--canvas", "100000", "-o", "{out}.safetensors"], ["--canvas", "1 to 4096 px", "100000"]),
    ("canvas-too-large-study", ["study", "--canvas", "100000", "-o", "{out}"], ["--canvas", "1 to 4096 px"]),
    ("steps-too-many", ["attack", "{d}/good.pt2", "--steps", "1000000000", "-o", "{out}.safetensors"], ["--steps", "1 to 100000 iterations"]),
    ("n-too-many", ["attack", "{d}/good.pt2", "--n", "20000000", "-o", "{out}.safetensors"], ["--n", "1 to 10000000 images"]),
    ("batch-size-too-large", ["attack", "{d}/good.pt2", "--batch-size", "10000000", "-o", "{out}.safetensors"], ["--batch-size", "1 to 65536"]),
    ("study-chunk-too-large", ["study", "--precision", "0.2", "--chunk", "1000000", "-o", "{out}"], ["--chunk", "10 to 100000 images"]),
    ("study-k-too-large", ["study", "-k", "5000", "-o", "{out}"], ["-k", "1 to 1000 clusters"]),
    ("state-dict-misfit", ["attack", "{d}/weights_misfit.safetensors", "--arch", "digits/resnet", "-o", "{out}.safetensors"], ["does not fit"]),
    ("weights-without-arch", ["attack", "{d}/weights_misfit.safetensors", "-o", "{out}.safetensors"], ["--arch"]),
    ("nan-logits", ["attack", "{d}/nan.pt2", "--n", "10", "--steps", "1", "-o", "{out}.safetensors"], ["NaN"]),
    ("pickle-without-opt-in", ["attack", "{d}/pickled.pt", "-o", "{out}.safetensors"], ["--allow-code-execution"]),
    ("pt2-zip-bomb", ["attack", "{d}/bomb.pt2", "-o", "{out}.safetensors"], ["bomb.pt2", "compressed or larger than the file"]),
    ("eps-negative", ["attack", "{d}/good.pt2", "--eps", "-0.1", "-o", "{out}.safetensors"], ["--eps"]),
    ("eps-above-one", ["attack", "{d}/good.pt2", "--eps", "1.5", "-o", "{out}.safetensors"], ["--eps"]),
    ("eps-not-a-number", ["attack", "{d}/good.pt2", "--eps", "8/0", "-o", "{out}.safetensors"], ["--eps"]),
    ("steps-zero", ["attack", "{d}/good.pt2", "--steps", "0", "-o", "{out}.safetensors"], ["--steps"]),
    ("batch-size-zero", ["attack", "{d}/good.pt2", "--batch-size", "0", "-o", "{out}.safetensors"], ["--batch-size"]),
    ("batch-size-zero-transfer", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "--batch-size", "0", "-o", "{out}.csv"], ["--batch-size"]),
    ("unknown-device", ["attack", "{d}/good.pt2", "--device", "tpu", "-o", "{out}.safetensors"], ["unknown device"]),
    ("unavailable-device", ["attack", "{d}/good.pt2", "--device", "cuda:3", "-o", "{out}.safetensors"], ["cuda:3"]),
    ("fp16-on-cpu", ["attack", "{d}/good.pt2", "--device", "cpu", "--amp", "fp16", "--n", "10", "-o", "{out}.safetensors"], ["fp16"]),
    ("n-negative", ["attack", "{d}/good.pt2", "--n", "-3", "-o", "{out}.safetensors"], ["--n"]),
    ("output-dir-missing", ["attack", "{d}/good.pt2", "-o", "{d}/no/such/dir/a.safetensors"], ["does not exist"]),
    ("output-dir-read-only", ["attack", "{d}/good.pt2", "-o", "{d}/readonly/a.safetensors"], ["not writable"]),
    ("output-is-directory", ["attack", "{d}/good.pt2", "-o", "{d}/folder_flat"], ["is a directory"]),
    ("data-not-found", ["attack", "{d}/good.pt2", "--data", "{d}/nowhere", "-o", "{out}.safetensors"], ["not found"]),
    ("matrix-missing-table", ["matrix", "{d}/nothing.csv", "-o", "{out}.csv"], ["no such file"]),
    ("matrix-table-without-columns", ["matrix", "{d}/transfer_nocols.csv", "-o", "{out}.csv"], ["lacks column"]),
    ("logits-different-samples", ["ensemble", "{d}/l1.safetensors", "{d}/l2.safetensors", "{d}/l_other.safetensors", "-o", "{out}.csv"],
     ["different clean sets"]),
    ("logits-file-is-attack-file", ["ensemble", "{d}/l1.safetensors", "{d}/adv.safetensors", "-o", "{out}.csv"], ["expected satkit.logits"]),
    ("transfer-no-target", ["transfer", "{d}/adv.safetensors", "-o", "{out}.csv"], ["no target"]),
    ("zoo-unknown-model", ["zoo", "train", "nonexistent"], ["unknown zoo model"]),
    ("unknown-zoo-spec", ["attack", "digits/nonexistent-s1", "-o", "{out}.safetensors"], ["unknown zoo model"]),
    ("info-missing", ["info", "{d}/missing.safetensors"], ["no such file"]),
    ("batch-size-word", ["attack", "{d}/good.pt2", "--batch-size", "many", "-o", "{out}.safetensors"], ["--batch-size", "auto"]),
    ("batch-size-zero-transfer", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "--batch-size", "0", "-o", "{out}.csv"], ["--batch-size"]),
    ("shard-out-of-range", ["attack", "{d}/good.pt2", "--n", "30", "--shard", "4/4", "-o", "{out}.safetensors"], ["--shard 4/4"]),
    ("shard-malformed", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "--shard", "half", "-o", "{out}.csv"], ["i/n"]),
    ("shard-with-auto-batch", ["attack", "{d}/good.pt2", "--shard", "0/2", "--batch-size", "auto", "-o", "{out}.safetensors"], ["fixed --batch-size"]),
    ("shard-without-images", ["attack", "{d}/good.pt2", "--n", "30", "--batch-size", "64", "--shard", "0/2", "-o", "{out}.safetensors"], ["no images"]),
    ("merge-not-a-shard", ["merge", "{d}/adv.safetensors", "-o", "{out}.safetensors"], ["not a shard"]),
    ("study-devices-unknown", ["study", "{d}/good.pt2", "--devices", "gpu0", "-o", "{out}"], ["unknown device"]),
    ("study-devices-and-ray", ["study", "--devices", "cpu", "--ray", "local", "-o", "{out}"], ["cannot be combined"]),
    ("study-ci-level", ["study", "--ci", "95", "-o", "{out}"], ["--ci"]),
    ("model-name-formula", ["attack", "digits/resnet-s1", "--name", "=1+1", "--n", "30", "--steps", "1", "-o", "{out}.safetensors"],
     ["'=1+1'", "spreadsheets run as a formula", "--name"]),
    ("model-name-formula-logits", ["logits", "digits/resnet-s1", "--name", "@SUM(1+9)", "--n", "30", "-o", "{out}.safetensors"],
     ["'@SUM(1+9)'", "spreadsheets run as a formula"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ws, tmp_path, case):
    if case[0] == "output-dir-read-only" and os.geteuid() == 0:
        pytest.skip("root can write into read-only directories")
    run_bad_case(case, ws, tmp_path)
