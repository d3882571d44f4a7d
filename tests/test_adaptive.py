"""satkit study --precision: nested stratified chunks, the union's matrix, the stop rule, resuming."""

import json

import numpy as np
import pytest
from safetensors.torch import save_file

from satkit.attacks import AttackParams
from satkit.data import load_data
from satkit.data.base import stratified_order
from satkit.study import StudyConfig, read_settings, run_study
from tests.cli_helpers import assert_clean_error, run

MODELS = ["digits/resnet-s1", "digits/vit-s1"]


def test_stratified_order_prefixes_are_stratified_and_nested():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    order = stratified_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(100))
    share = np.bincount(labels) / len(labels)
    for m in range(1, 101):
        counts = np.bincount(labels[order[:m]], minlength=4)
        assert np.all(np.abs(counts - m * share) <= 1.0), (m, counts)
    assert np.array_equal(order, stratified_order(labels, seed=3))
    assert not np.array_equal(order, stratified_order(labels, seed=4))


def test_chunks_are_disjoint_stratified_samples():
    a, b = load_data("digits", chunk=(0, 40)), load_data("digits", chunk=(1, 40))
    assert not set(a.ids.tolist()) & set(b.ids.tolist())
    assert np.bincount(a.labels.numpy()).tolist() == [4] * 10
    assert a.fingerprint != b.fingerprint and a.info["chunk"] == [0, 40]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    d = load_data("digits", n=60, seed=1)
    p = tmp_path_factory.mktemp("adaptive") / "d60.safetensors"
    save_file({"images": d.images, "labels": d.labels}, str(p))
    return p


def _cfg(out, data, **kw):
    return StudyConfig.create(MODELS, out, data=str(data), params=AttackParams(eps=0.1, steps=2), analyses=False, **kw)


@pytest.mark.slow
def test_union_of_all_chunks_is_the_fixed_study_and_reruns_reuse(tmp_path, small_data):
    fixed = run_study(_cfg(tmp_path / "fixed", small_data))
    assert fixed.matrix is not None
    res = run_study(_cfg(tmp_path / "ad", small_data, precision=1e-9, chunk=20))  # unreachable: every chunk is used
    a = res.adaptive
    assert (a["chunks_used"], a["images_used"], a["stopped"]) == (3, 60, "n")
    # disjoint chunks: summed counts are the whole set's, so the matrix is the fixed study's, byte for byte
    assert (tmp_path / "ad" / "sat.csv").read_bytes() == (tmp_path / "fixed" / "sat.csv").read_bytes()
    summary = json.loads((tmp_path / "ad" / "study.json").read_text())["adaptive"]
    assert summary == json.loads(json.dumps(a)) and len(summary["history"]) == 3
    widths = [h["max_half_width"] for h in summary["history"]]
    assert widths[-1] < widths[0]  # more images, narrower intervals
    # a looser target stops at the first chunk that meets it, reusing the chunks done
    loose = run_study(_cfg(tmp_path / "ad", small_data, precision=widths[1] + 1e-9, chunk=20))
    assert (loose.adaptive["chunks_used"], loose.adaptive["images_used"], loose.adaptive["stopped"]) == (2, 40, "precision")
    assert all(r.attacks_run == 0 and r.transfer_evaluations == 0 for r in loose.chunk_results)
    st = read_settings(tmp_path / "ad")
    assert st.adaptive["images_used"] == 40 and st.precision == widths[1] + 1e-9 and st.chunk == 20


@pytest.mark.slow
def test_cli_precision(tmp_path, small_data):
    out = tmp_path / "s"
    r = run("study", *MODELS, "--data", small_data, "--steps", "2", "--precision", "5", "--chunk", "20", "-o", out)
    assert "adaptive study: 20 images in 1 chunk(s)" in r.stderr  # every interval is narrower than 5 log units
    assert (out / "study.json").is_file() and (out / "report.html").is_file()  # the root is a study
    assert (out / "chunks" / "0000" / "study.json").is_file()
    assert json.loads((out / "chunks" / "0000" / "study.json").read_text())["chunk"] == [0, 20]
    # a chunk study is a study: its settings rebuild the chunk's clean set
    from satkit.study import read_settings

    st = read_settings(out / "chunks" / "0000")
    assert st.data.chunk == (0, 20) and st.data.load().fingerprint == st.fingerprint


@pytest.mark.parametrize("argv, words", [
    (["--precision", "0"], ["--precision", "positive"]),
    (["--precision", "0.2", "--n-boot", "10"], ["--n-boot", "40"]),
    (["--precision", "0.2", "--chunk", "3"], ["--chunk", "from 10 to 100000"]),
])
def test_bad_precision_options(tmp_path, argv, words):
    assert_clean_error(run("study", *MODELS, *argv, "-o", tmp_path / "s", ok=False), *words)
    assert not (tmp_path / "s" / "study.json").exists()
