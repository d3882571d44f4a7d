"""transfer: counts on X_AB, only X_AB evaluated, mixed resolutions end to end, refusals."""

import math

import polars as pl
import pytest
import torch

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.data import load_data
from satkit.errors import DataError, InputFileError, MismatchError
from satkit.matrix.sat import build_matrix
from satkit.transfer import open_attack_files, run_transfer
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def two_attacks(tmp_path_factory):
    d = load_data("digits", n=60, seed=0)
    tmp = tmp_path_factory.mktemp("att")
    a = tiny_model("A", seed=1)
    b = tiny_model("B", input_size=(1, 24, 24), seed=2)  # another input resolution: resized inside its wrapper
    p = AttackParams(eps=0.1, steps=5)
    pa = save_attack(run_attack(a, d, p), tmp / "A.safetensors")
    pb = save_attack(run_attack(b, d, p), tmp / "B.safetensors")
    return d, a, b, pa, pb


def _by_hand(target, files):
    """Direct computation, no shortcuts: every sample, every file."""
    out = {}
    for f in files:
        clean, adv, y = f.get("clean").float() / 255, f.get("adv").float() / 255, f.get("labels")
        with torch.no_grad():
            tc = target.module(clean).argmax(1) == y
            ta = target.module(adv).argmax(1) == y
        both = f.get("source_correct") & tc
        out[f.provenance["model"]["name"]] = (int(both.sum()), int((both & ~ta).sum()))
    return out


def test_counts_match_direct_computation(two_attacks):
    d, a, b, pa, pb = two_attacks
    files = open_attack_files([pa, pb])
    for target in (a, b):
        res = run_transfer(target, files, batch_size=7)
        expect = _by_hand(target, files)
        for row in res.rows:
            assert (row["n_both"], row["n_fooled"]) == expect[row["source"]]
            assert row["target"] == target.name and row["n"] == len(d)


def test_only_xab_is_evaluated(two_attacks):
    _, a, b, pa, pb = two_attacks
    files = open_attack_files([pa, pb])
    res = run_transfer(b, files)
    n_clean = files[0].get("labels").numel()
    # B's own attack file is among them, so its clean predictions are reused: forwards = sum |X_AB| only
    assert res.forward_samples == sum(r["n_both"] for r in res.rows)
    res2 = run_transfer(b, [files[0]])  # without its own file: one clean pass + |X_AB|
    assert res2.forward_samples == n_clean + res2.rows[0]["n_both"]


def test_mixed_resolutions_end_to_end(two_attacks):
    _, a, b, pa, pb = two_attacks
    files = open_attack_files([pa, pb])
    tables = [run_transfer(m, files).table() for m in (a, b)]
    m = build_matrix(tables)
    assert m.names == ["A", "B"]
    assert all(math.isfinite(v) for v in m.values.flatten())
    assert m.values[0, 1] == m.values[1, 0]


def test_per_sample_outcomes(two_attacks):
    _, a, b, pa, pb = two_attacks
    res = run_transfer(a, open_attack_files([pb]), per_sample=True)
    ps = res.per_sample_table()
    assert ps.height == 60 and set(ps.columns) >= {"id", "label", "source_correct", "target_correct", "fooled"}
    assert int(ps["fooled"].sum()) == res.rows[0]["n_fooled"]
    assert (ps.filter(~(pl.col("source_correct") & pl.col("target_correct")))["target_adv_pred"] == -1).all()


def test_refuses_different_clean_sets(tmp_path, two_attacks):
    _, a, _, pa, _ = two_attacks
    other = load_data("digits", n=60, seed=1)
    po = save_attack(run_attack(a, other, AttackParams(eps=0.1, steps=1)), tmp_path / "o.safetensors")
    with pytest.raises(MismatchError, match="different clean sets"):
        open_attack_files([pa, po])


def test_labels_out_of_range_for_target(two_attacks):
    _, _, _, pa, _ = two_attacks
    with pytest.raises(DataError, match="classes"):
        run_transfer(tiny_model("small", num_classes=4), open_attack_files([pa]))


def test_nan_logits_are_an_error(two_attacks):
    _, _, _, pa, _ = two_attacks
    m = tiny_model("nan")
    with torch.no_grad():
        m.module.model.fc.bias.fill_(float("nan"))
    from satkit.errors import ModelError

    with pytest.raises(ModelError, match="NaN"):
        run_transfer(m, open_attack_files([pa]))


def test_not_an_attack_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(InputFileError, match="not one satkit wrote"):
        open_attack_files([tmp_path / "w.safetensors"])
