"""Data sources: digits, image folders, tensor files; stratified seeded sampling."""

import numpy as np
import pytest
import torch
from PIL import Image

from satkit.data import load_data, stratified_sample
from satkit.errors import DataError, InputFileError, ParameterError


def make_folder(root, classes=("cat", "dog", "emu"), per_class=4, size=(40, 30)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i:03d}.png")
    return root


def test_digits_split_and_canvas():
    d = load_data("digits")
    assert len(d) == 540 and d.canvas == (1, 16, 16) and d.images.dtype == torch.uint8
    tr = load_data("digits:train")
    assert len(tr) == 1797 - 540
    assert not set(d.ids.tolist()) & set(tr.ids.tolist())  # held out
    assert load_data("digits", canvas=8).canvas == (1, 8, 8)


def test_stratified_sample_is_balanced_seeded_and_sorted():
    labels = np.repeat(np.arange(10), 50)
    s = stratified_sample(labels, 50, seed=1)
    assert np.bincount(labels[s]).tolist() == [5] * 10
    assert (s == stratified_sample(labels, 50, seed=1)).all()
    assert not (s == stratified_sample(labels, 50, seed=2)).all()
    assert (np.diff(s) > 0).all()
    s2 = stratified_sample(labels, 53, seed=0)
    assert len(s2) == 53 and np.bincount(labels[s2]).min() == 5
    with pytest.raises(ParameterError):
        stratified_sample(labels, 0, seed=0)


def test_fingerprint_tracks_content():
    a, b = load_data("digits", n=50, seed=0), load_data("digits", n=50, seed=0)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != load_data("digits", n=50, seed=1).fingerprint


def test_image_folder(tmp_path):
    root = make_folder(tmp_path / "val")
    d = load_data(str(root), canvas=24)
    assert d.canvas == (3, 24, 24) and len(d) == 12 and d.num_classes == 3
    assert d.class_names == ["cat", "dog", "emu"]
    assert d.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    s = load_data(str(root), canvas=24, n=6, seed=0)
    assert np.bincount(s.labels.numpy()).tolist() == [2, 2, 2]
    # ids are positions in the whole sorted listing: stable whatever the sample
    assert set(s.ids.tolist()) <= set(d.ids.tolist())


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load_data(str(tmp_path / "noimg"))
    root = make_folder(tmp_path / "bad", per_class=1)
    (root / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot decode"):
        load_data(str(root), canvas=16)


def test_tensor_file_roundtrip(tmp_path):
    from satkit.io.tensorfile import write_tensor_file

    imgs = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(10) % 2
    write_tensor_file(tmp_path / "d.safetensors", "satkit.data", {"images": imgs, "labels": labels}, {"num_classes": 2})
    d = load_data(str(tmp_path / "d.safetensors"))
    assert torch.equal(d.images, imgs) and d.num_classes == 2 and d.ids.tolist() == list(range(10))


def test_unknown_sources():
    with pytest.raises(DataError, match="not found"):
        load_data("/nope/nothing")
    with pytest.raises(DataError, match="unknown digits split"):
        load_data("digits:valid")
    with pytest.raises(ParameterError):
        load_data("digits", n=-5)


def test_unsupported_file(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputFileError, match="unsupported"):
        load_data(str(tmp_path / "x.txt"))
