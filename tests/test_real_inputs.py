"""Inputs real users bring: ImageNet val as distributed (a flat folder + labels file), timm
weights built with non-default arguments, hf-hub names, and plain safetensors tensors as data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from satkit.data import DataRequest, load_data
from satkit.data.stream import imagenet_synsets
from satkit.errors import DataError, ModelError, ParameterError
from satkit.io.fingerprint import fingerprint_of
from satkit.models import ModelOptions, load_model
from satkit.models.registry import expected_weights_id, model_display_name
from tests.cli_helpers import assert_clean_error, run

# class 0, class 1 and the last of the 1,000 sorted ImageNet-1k synsets
SYNSETS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}
N_IMAGES = 9


def _provenance(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["provenance"])


# ---------------------------------------------------------------- ImageNet val as distributed


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    """A flat folder of ILSVRC2012_val_*.JPEG (made with PIL) and its labels in both formats."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    d = root / "val"
    d.mkdir()
    rng = np.random.default_rng(0)
    syn = list(SYNSETS)
    kaggle, plain, caffe = ["ImageId,PredictionString"], ["filename,label"], []
    for i in range(1, N_IMAGES + 1):
        name = f"ILSVRC2012_val_{i:08d}"
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(d / f"{name}.JPEG", quality=90)
        s = syn[i % 3]
        kaggle.append(f"{name},{s} 10 12 30 40 {s} 1 2 20 21 ")
        plain.append(f"{name}.JPEG,{SYNSETS[s]}")
        caffe.append(f"{name}.JPEG {SYNSETS[s]}")
    (root / "LOC_val_solution.csv").write_text("\n".join(kaggle) + "\n")
    (root / "labels.csv").write_text("\n".join(plain) + "\n")
    (root / "val.txt").write_text("\n".join(caffe) + "\n")
    return root


def expected_labels() -> list[int]:
    syn = list(SYNSETS)
    return [SYNSETS[syn[i % 3]] for i in range(1, N_IMAGES + 1)]


def test_synsets_are_timms_imagenet_class_order():
    s = imagenet_synsets()
    assert len(s) == 1000 and s == sorted(s)
    assert all(s[i] == name for name, i in SYNSETS.items())


@pytest.mark.parametrize("labels", ["LOC_val_solution.csv", "labels.csv", "val.txt"])
def test_flat_folder_with_labels_loads_with_timm_class_indices(val, labels):
    cs = load_data(str(val / "val"), canvas=32, labels=str(val / labels))
    assert cs.labels.tolist() == expected_labels()
    assert cs.ids.tolist() == list(range(N_IMAGES))  # positions in the sorted listing
    assert cs.canvas == (3, 32, 32)
    if labels == "LOC_val_solution.csv":
        # a file naming 3 synsets still has the 1,000-class numbering (the last synset is class 999)
        assert cs.num_classes == 1000 and cs.class_names[999] == "n15075141"


def test_both_label_formats_give_the_same_clean_set_and_other_labels_another_fingerprint(val, tmp_path):
    a = load_data(str(val / "val"), canvas=32, labels=str(val / "LOC_val_solution.csv"))
    b = load_data(str(val / "val"), canvas=32, labels=str(val / "labels.csv"))
    assert a.fingerprint == b.fingerprint
    changed = (val / "labels.csv").read_text().replace(",999\n", ",5\n", 1)
    (tmp_path / "other.csv").write_text(changed)
    c = load_data(str(val / "val"), canvas=32, labels=str(tmp_path / "other.csv"))
    assert torch.equal(a.images, c.images) and c.fingerprint != a.fingerprint


def test_sampling_and_streaming_match_the_eager_load(val):
    req = DataRequest(str(val / "val"), n=6, seed=1, canvas=32, labels=str(val / "LOC_val_solution.csv"))
    eager = req.load()
    assert len(eager) == 6 and sorted(set(eager.labels.tolist())) == [0, 1, 999]  # stratified: 2 per class
    with req.open().stream(workers=2) as s:
        assert s.fingerprint == eager.fingerprint


def test_data_request_labels_field(val):
    a = DataRequest(str(val / "val"), labels=str(val / "labels.csv"))
    b = DataRequest(str(val / "val"), labels=str(val / "LOC_val_solution.csv"))
    assert a != b and hash(a) != hash(b) and DataRequest().labels is None
    assert a.local_file() == val / "labels.csv"  # an input: no output may replace it


@pytest.mark.slow
def test_attack_and_logits_on_a_flat_folder(val, tmp_path):
    import timm

    if not timm.is_model("test_resnet"):
        pytest.skip("this timm has no test_resnet")
    base = ["--data", val / "val", "--canvas", 32, "--random-init"]
    run("attack", "test_resnet", *base, "--labels", val / "LOC_val_solution.csv", "--steps", 1, "-o", tmp_path / "a.safetensors")
    run("logits", "test_resnet", *base, "--labels", val / "labels.csv", "-o", tmp_path / "l.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:
        assert f.get_tensor("labels").tolist() == expected_labels()
    pa, pl_ = _provenance(tmp_path / "a.safetensors"), _provenance(tmp_path / "l.safetensors")
    assert pa["data"]["num_classes"] == 1000
    assert pa["data"]["fingerprint"] == pl_["data"]["fingerprint"]  # same clean set from either labels file
    # the labels file is an input: never an output
    r = run("attack", "test_resnet", *base, "--labels", val / "labels.csv", "-o", val / "labels.csv", ok=False)
    assert_clean_error(r, "also an input")


def _variant(val, tmp_path, edit) -> tuple:
    """A copy of the folder and the Kaggle labels, changed by ``edit(folder, lines)``."""
    import shutil

    d = tmp_path / "val"
    shutil.copytree(val / "val", d)
    lines = (val / "LOC_val_solution.csv").read_text().splitlines()
    out = edit(d, lines)  # a new list of lines, or None / a Path when it changed the folder
    lines = out if isinstance(out, list) else lines
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return d, tmp_path / "labels.csv"


MISMATCHES = {
    "image without a label": (lambda d, lines: lines[:3] + lines[4:], ["ILSVRC2012_val_00000003.JPEG", "no label in"]),
    "label naming a missing image": (lambda d, lines: (d / "ILSVRC2012_val_00000005.JPEG").unlink(),
                                     ["names image 'ILSVRC2012_val_00000005'", "not in"]),
    "unknown synset": (lambda d, lines: [lines[0], lines[1].split(",")[0] + ",n99999999 1 2 3 4", *lines[2:]],
                       ["unknown synset 'n99999999'"]),
    "mixed label kinds": (lambda d, lines: [lines[0], lines[1].split(",")[0] + ",3", *lines[2:]], ["mixes synset ids and integer"]),
    "image labelled twice": (lambda d, lines: [*lines, lines[1]], ["labelled twice"]),
    "one field": (lambda d, lines: [*lines, "ILSVRC2012_val_00000099"], ["two fields"]),
    "a label that is neither": (lambda d, lines: ["filename,label", *(ln.split(",")[0] + ",cat" for ln in lines[1:])],
                                ["neither a class index"]),
    "empty labels file": (lambda d, lines: ["ImageId,PredictionString"], ["no labels in the file"]),
    "two images, one stem": (lambda d, lines: (d / "ILSVRC2012_val_00000001.JPEG").rename(d / "ILSVRC2012_val_00000002.png"),
                             ["share the name"]),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_flat_folder_mismatches_are_one_line_errors(val, tmp_path, case):
    edit, words = MISMATCHES[case]
    d, labels = _variant(val, tmp_path, edit)
    with pytest.raises(DataError):
        load_data(str(d), canvas=32, labels=str(labels))
    r = run("attack", "digits/resnet-s1", "--data", d, "--labels", labels, "-o", tmp_path / "a.safetensors", ok=False)
    assert_clean_error(r, *words)
    assert not (tmp_path / "a.safetensors").exists()


def test_labels_misuse_is_a_one_line_error(val, tmp_path):
    r = run("logits", "digits/resnet-s1", "--data", val / "val", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "no class sub-folders", "--labels")  # a flat folder without labels says what to add
    r = run("logits", "digits/resnet-s1", "--labels", val / "labels.csv", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "--labels", "flat image folder")  # --data digits
    r = run("logits", "digits/resnet-s1", "--data", val / "val", "--labels", tmp_path / "nope.csv", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "labels file", "not found")
    with pytest.raises(ParameterError):
        load_data("digits", labels=str(val / "labels.csv"))


# ---------------------------------------------------------------- timm arguments for local weights


@pytest.fixture(scope="module")
def gray_resnet(tmp_path_factory):
    """resnet18 built with in_chans=1, num_classes=10: its state dict as a plain safetensors file."""
    import timm

    m = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=10)
    p = tmp_path_factory.mktemp("weights") / "gray_resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p))
    return p, m.state_dict()


def test_state_dict_mismatch_is_one_complete_line(gray_resnet, tmp_path):
    p, _ = gray_resnet
    r = run("logits", p, "--arch", "resnet18", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "'conv1.weight' has shape [64, 1, 7, 7] in the file but [64, 3, 7, 7] in the model",
                       "--model-kwargs in_chans=1")
    assert "..." not in r.stderr
    r = run("logits", p, "--arch", "resnet18", "--model-kwargs", "in_chans=1,num_classes=12", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "'fc.weight' has shape [10, 512] in the file but [12, 512] in the model", "--model-kwargs")


@pytest.mark.parametrize("form", [["in_chans=1,num_classes=10"], ["in_chans=1", "num_classes=10"]])
def test_model_kwargs_load_a_timm_state_dict_built_with_other_arguments(gray_resnet, tmp_path, form):
    p, sd = gray_resnet
    lm = load_model(str(p), ModelOptions(arch="resnet18", model_kwargs={"in_chans": 1, "num_classes": 10}))
    loaded = lm.module.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert lm.num_classes == 10 and lm.module.cfg.input_size[0] == 1 and len(lm.module.cfg.mean) == 1
    args = [a for f in form for a in ("--model-kwargs", f)]
    run("logits", p, "--arch", "resnet18", *args, "--n", 10, "--input-size", "1,32,32", "-o", tmp_path / "l.safetensors")
    prov = _provenance(tmp_path / "l.safetensors")
    assert prov["model"]["model_kwargs"] == {"in_chans": 1, "num_classes": 10}


def test_model_kwargs_parsing_and_refusals(tmp_path):
    from satkit.cli.common import parse_model_kwargs

    assert parse_model_kwargs(["in_chans=1, drop_rate=0.1", "global_pool=max,pretrained_strict=false,act=none"]) == {
        "in_chans": 1, "drop_rate": 0.1, "global_pool": "max", "pretrained_strict": False, "act": None}
    for bad in (["in_chans"], ["=1"], ["1x=2"], ["a=1,a=2"], ["a="]):
        with pytest.raises(ParameterError):
            parse_model_kwargs(bad)
    with pytest.raises(ModelError, match="pretrained weights"):
        load_model("resnet18", ModelOptions(model_kwargs={"in_chans": 1}))
    with pytest.raises(ModelError, match="unexpected keyword"):
        load_model("resnet18", ModelOptions(pretrained=False, model_kwargs={"bogus": 1}))
    r = run("logits", "digits/resnet-s1", "--model-kwargs", "in_chans", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "NAME=VALUE")
    from satkit.models import zoo

    w = zoo.find_weights("resnet-s1")
    r = run("logits", w, "--arch", "digits/resnet", "--model-kwargs", "in_chans=1", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "zoo architecture")


# ---------------------------------------------------------------- hf-hub names


REPO = "timm/test_resnet.r160_in1k"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_names_are_not_file_paths():
    name = f"hf-hub:{REPO}"
    assert model_display_name(name) == name
    assert expected_weights_id(name) == name
    assert expected_weights_id(name, ModelOptions(pretrained=False)) == "random-init"


def test_hub_name_offline_and_not_cached_says_what_to_fetch_and_where(hub_cache, tmp_path):
    r = run("logits", "hf-hub:timm/resnet18.a1_in1k", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "hf-hub:timm/resnet18.a1_in1k", "config.json", "model.safetensors",
                       str(hub_cache / "models--timm--resnet18.a1_in1k"), "hf download timm/resnet18.a1_in1k",
                       "--arch resnet18")
    assert "not found" not in r.stderr  # not the model-file branch
    r = run("logits", "hf-hub:someone/model", "--random-init", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "models--someone--model", "--arch ARCH", "architecture")
    r = run("logits", "hf-hub:no-repo", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "hf-hub:ORG/REPO")


@pytest.mark.slow
def test_hub_name_loads_from_the_local_cache_offline(hub_cache, val, tmp_path):
    """A hub repository already in the cache (laid out as huggingface_hub does) loads offline through timm."""
    import timm
    from timm.models._hub import save_for_hf

    if not timm.is_model("test_resnet"):
        pytest.skip("this timm has no test_resnet")
    model = timm.create_model("test_resnet", pretrained=False)
    repo = hub_cache / ("models--" + REPO.replace("/", "--"))
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_for_hf(model, snap, safe_serialization=True)
    lm = load_model(f"hf-hub:{REPO}")
    assert lm.weights_id == f"hf-hub:{REPO}" and lm.num_classes == 1000
    assert all(torch.equal(lm.module.model.state_dict()[k], v) for k, v in model.state_dict().items())
    # a 1000-class hub model on the flat ImageNet-style folder
    run("logits", f"hf-hub:{REPO}", "--data", val / "val", "--labels", val / "LOC_val_solution.csv", "--canvas", 32,
        "-o", tmp_path / "l.safetensors")
    assert _provenance(tmp_path / "l.safetensors")["model"]["weights_id"] == f"hf-hub:{REPO}"


# ---------------------------------------------------------------- your own tensors as data


def test_plain_safetensors_tensors_are_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 16, 16, generator=g)
    labels = torch.arange(20) % 10
    save_file({"images": images, "labels": labels}, str(tmp_path / "mine.safetensors"))
    cs = load_data(str(tmp_path / "mine.safetensors"))
    u8 = (images * 255).round().to(torch.uint8)
    assert torch.equal(cs.images, u8) and cs.labels.tolist() == labels.tolist() and cs.ids.tolist() == list(range(20))
    assert cs.num_classes == 10 and cs.fingerprint == fingerprint_of(u8, labels, torch.arange(20))
    run("logits", "digits/resnet-s1", "--data", tmp_path / "mine.safetensors", "-o", tmp_path / "l.safetensors")
    assert _provenance(tmp_path / "l.safetensors")["data"]["fingerprint"] == cs.fingerprint  # computed on read
    # where a satkit file is expected, a plain file is still refused
    r = run("info", tmp_path / "mine.safetensors", ok=False)
    assert_clean_error(r, "not one satkit wrote")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_plain_data_image_dtypes_and_optional_ids(tmp_path, dtype):
    u8 = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    images = u8 if dtype == torch.uint8 else (u8.double() / 255).to(dtype)
    ids = torch.arange(100, 112, dtype=torch.int32)
    save_file({"images": images, "labels": (torch.arange(12) % 4).to(torch.int16), "ids": ids}, str(tmp_path / "d.safetensors"))
    cs = load_data(str(tmp_path / "d.safetensors"))
    assert cs.ids.tolist() == list(range(100, 112)) and cs.labels.dtype == torch.int64 and cs.num_classes == 4
    if dtype in (torch.uint8, torch.float32, torch.float64):  # exact k/255 survives these
        assert torch.equal(cs.images, u8)


PLAIN_DEFECTS = {
    "missing labels": ({"images": torch.rand(4, 1, 8, 8)}, ["tensor 'labels' is missing", "it holds images"]),
    "model weights": ({"conv.weight": torch.rand(3, 3)}, ["without satkit metadata", "'images' is missing", "conv.weight"]),
    "channels last": ({"images": torch.rand(4, 8, 8, 3), "labels": torch.zeros(4, dtype=torch.int64)}, ["(N, H, W, C)", "permute"]),
    "pixels above 1": ({"images": torch.rand(4, 1, 8, 8) * 2, "labels": torch.zeros(4, dtype=torch.int64)}, ["outside [0, 1]"]),
    "NaN pixels": ({"images": torch.full((4, 1, 8, 8), float("nan")), "labels": torch.zeros(4, dtype=torch.int64)}, ["NaN/inf"]),
    "negative labels": ({"images": torch.rand(4, 1, 8, 8), "labels": -torch.ones(4, dtype=torch.int64)}, ["labels must lie in"]),
    "float labels": ({"images": torch.rand(4, 1, 8, 8), "labels": torch.zeros(4)}, ["tensor 'labels' is float32"]),
    "repeated ids": ({"images": torch.rand(4, 1, 8, 8), "labels": torch.zeros(4, dtype=torch.int64),
                      "ids": torch.zeros(4, dtype=torch.int64)}, ["ids are not unique"]),
    "row counts differ": ({"images": torch.rand(4, 1, 8, 8), "labels": torch.zeros(3, dtype=torch.int64)}, ["3 rows but the images have 4"]),
    "images not 4-D": ({"images": torch.rand(4, 8, 8), "labels": torch.zeros(4, dtype=torch.int64)}, ["expected (N, C, H, W)"]),
}


@pytest.mark.parametrize("case", sorted(PLAIN_DEFECTS))
def test_plain_data_files_are_verified(tmp_path, case):
    tensors, words = PLAIN_DEFECTS[case]
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    r = run("logits", "digits/resnet-s1", "--data", tmp_path / "bad.safetensors", "-o", tmp_path / "l.safetensors", ok=False)
    assert_clean_error(r, "bad.safetensors", *words)
    assert not (tmp_path / "l.safetensors").exists()
