"""Image folders decoded in background threads while the attack runs (satkit.data.stream)."""

import hashlib
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.data import FolderImages, ImageStream, load_data, open_data
from satkit.data.base import Fingerprinter, fingerprint_of
from satkit.data.stream import StreamClosed
from satkit.errors import DataError
from tests.cli_helpers import assert_clean_error, run
from tests.conftest import tiny_model


def make_folder(root, per_class=7, classes=("a", "b", "c")):
    """JPEG, PNG (RGBA, L) and GIF images of a few odd sizes, so every decode path is taken."""
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + 3 * i, 28 - 2 * ci
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            kind = (i + ci) % 4
            if kind == 0:
                Image.fromarray(rgb).save(root / c / f"{i:02d}.jpg", quality=90)
            elif kind == 1:
                Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA").save(root / c / f"{i:02d}.png")
            elif kind == 2:
                Image.fromarray(rgb[:, :, 0], "L").save(root / c / f"{i:02d}.png")
            else:
                Image.fromarray(rgb).convert("P").save(root / c / f"{i:02d}.gif")
    return root


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("satkit-decode", "satkit-hash", "satkit-prepare"))]


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "val")


def test_fingerprinter_in_pieces_equals_fingerprint_of():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (11, 3, 5, 4), dtype=torch.uint8, generator=g)
    labels, ids = torch.arange(11) % 3, torch.arange(11) * 7
    fp = Fingerprinter(tuple(images.shape), images.dtype)
    for s, e in ((0, 4), (4, 5), (5, 11)):
        fp.update(images[s:e])
    assert fp.hexdigest(labels, ids) == fingerprint_of(images, labels, ids)
    assert fp.hexdigest(labels, ids) == fp.hexdigest(labels, ids)  # asking twice does not change it


@pytest.mark.parametrize("n, chunk, workers", [(None, 4, 2), (9, 32, 1), (None, 5, 3)])
def test_stream_equals_eager_load(folder, n, chunk, workers):
    eager = load_data(str(folder), canvas=16, n=n, seed=1)
    src = open_data(str(folder), canvas=16, n=n, seed=1)
    assert isinstance(src, FolderImages) and len(src) == len(eager) and src.canvas == eager.canvas
    with src.stream(workers=workers, chunk=chunk) as s:
        assert isinstance(s, ImageStream)
        assert s.fingerprint == eager.fingerprint
        assert torch.equal(s.images, eager.images)
        assert torch.equal(s.labels, eager.labels) and torch.equal(s.ids, eager.ids)
        assert (s.source, s.num_classes, s.canvas, s.info) == (eager.source, eager.num_classes, eager.canvas, eager.info)
        got = torch.cat([b for _, b, _ in s.batches(4)])
        assert torch.equal(got, eager.images)
    assert not decode_threads()


def test_non_folder_sources_stay_eager():
    assert not isinstance(open_data("digits", n=20), FolderImages)


@pytest.mark.parametrize("storage", ["uint8", "float16"])
def test_streamed_attack_is_byte_identical_to_eager(tmp_path, folder, storage):
    params = AttackParams(eps=0.1, steps=3, storage=storage, seed=2)
    eager = run_attack(tiny_model(), load_data(str(folder), canvas=16), params, batch_size=4)
    a = save_attack(eager, tmp_path / "eager.safetensors")
    with open_data(str(folder), canvas=16).stream(workers=2, chunk=3) as s:
        streamed = run_attack(tiny_model(), s, params, batch_size=4)
    b = save_attack(streamed, tmp_path / "streamed.safetensors")
    assert _sha(a) == _sha(b)
    assert not decode_threads()


def test_prepare_runs_ahead_and_keeps_order(folder):
    with open_data(str(folder), canvas=16).stream(workers=2, chunk=4) as s:
        seen = [(sl, u8.clone(), prep) for sl, u8, prep in s.batches(5, prepare=lambda u8: u8.float().sum())]
        assert [sl.start for sl, _, _ in seen] == list(range(0, len(s), 5))
        for sl, u8, prep in seen:
            assert torch.equal(u8, s.images[sl]) and float(prep) == float(s.images[sl].float().sum())


def test_cli_streamed_file_equals_library_eager_file(tmp_path, folder):
    """`satkit attack --data FOLDER` decodes while attacking; the file is the one the eager path writes."""
    out = tmp_path / "cli.safetensors"
    run("attack", "digits/resnet-s1", "--data", folder, "--canvas", "16", "--eps", "0.1", "--steps", "2",
        "--batch-size", "8", "-o", out)
    from satkit.models import load_model

    ref = run_attack(load_model("digits/resnet-s1"), load_data(str(folder), canvas=16), AttackParams(eps=0.1, steps=2), batch_size=8)
    assert _sha(out) == _sha(save_attack(ref, tmp_path / "ref.safetensors"))
    assert not decode_threads()


def test_corrupt_image_is_a_clean_error_from_the_background_decoder(tmp_path, folder):
    bad = folder / "b" / "03_broken.jpg"  # in the middle of the listing: found by a decode thread mid-attack
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "adv.safetensors"
    r = run("attack", "digits/resnet-s1", "--data", folder, "--canvas", "16", "--steps", "1", "--batch-size", "4", "-o", out, ok=False)
    assert_clean_error(r, "03_broken.jpg", "cannot decode")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert not decode_threads()


def test_first_bad_image_in_order_is_reported_and_threads_stop(folder):
    for name in ("01_bad.jpg", "05_bad.jpg"):
        (folder / "c" / name).write_bytes(b"garbage")
    with pytest.raises(DataError, match="01_bad.jpg: cannot decode"):
        load_data(str(folder), canvas=16)
    src = open_data(str(folder), canvas=16)
    with pytest.raises(DataError, match="01_bad.jpg"):
        with src.stream(workers=3, chunk=2) as s:
            for _ in s.batches(3):
                pass
    assert not decode_threads()


def test_closing_early_stops_decoding(folder, monkeypatch):
    import satkit.data.stream as stream_mod

    gate = threading.Event()
    real = stream_mod.decode_resize_into

    def slow(out, path, *a, **k):  # every image but the first waits for the gate: the stream is closed mid-way
        if not path.name.startswith("00."):
            gate.wait(10)
        real(out, path, *a, **k)

    monkeypatch.setattr(stream_mod, "decode_resize_into", slow)
    s = open_data(str(folder), canvas=16).stream(workers=1, chunk=1)
    first = s.wait(0, 1).clone()
    threading.Timer(0.2, gate.set).start()
    s.close()  # returns once the image being decoded is done; the queued ones never start
    assert not decode_threads()
    assert torch.equal(s.images[:1], first)  # decoded rows stay readable
    with pytest.raises(StreamClosed):
        s.wait(0, len(s))  # rows it never decoded are an error, not garbage
    s.close()  # idempotent


def test_prepared_host_batches_give_the_same_file(tmp_path, folder, monkeypatch):
    """The GPU path (each batch's rows and random start prepared one batch ahead, pinned, copied with
    non_blocking) writes the same bytes; exercised on the CPU with pinning (which needs a GPU) recorded."""
    import satkit.attacks.runner as runner

    params = AttackParams(eps=0.1, steps=2, storage="float16", attack_all=True)  # the random tiny model is mostly wrong
    a = save_attack(run_attack(tiny_model(), load_data(str(folder), canvas=16), params, batch_size=4), tmp_path / "a.safetensors")
    calls = []

    def pinned(t, device):
        calls.append(len(t))
        return t.clone()  # a copy, as pinning makes

    monkeypatch.setattr(runner, "_pinned", pinned)
    with open_data(str(folder), canvas=16).stream(workers=2) as s:
        rb = run_attack(tiny_model(), s, params, batch_size=4)
        b = save_attack(rb, tmp_path / "b.safetensors")
    attacked = rb.provenance["stats"]["attacked"]
    assert attacked == len(s)
    # every clean row (clean pass), and each attacked sample's row and random start, went through the prepared path
    assert sum(calls) == len(s) + 2 * attacked
    assert _sha(a) == _sha(b)
