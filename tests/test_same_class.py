"""Direction of misclassification (the paper's appendix G.2): same-class counts, rates and matrix."""

import math

import polars as pl
import pytest
import torch

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.data import load_data
from satkit.errors import InputFileError
from satkit.formats import read_satkit_file
from satkit.matrix.sat import build_matrix
from satkit.models import load_model
from satkit.transfer import open_attack_files, run_transfer
from tests.cli_helpers import assert_clean_error, run
from tests.test_verify import refused, rewrite


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    d = load_data("digits", n=80, seed=0)
    tmp = tmp_path_factory.mktemp("same")
    p = AttackParams(eps=0.1, steps=10)
    a, b = load_model("digits/resnet-s1"), load_model("digits/vit-s1")  # trained: transfer happens, in several classes
    return a, b, save_attack(run_attack(a, d, p), tmp / "A.safetensors"), save_attack(run_attack(b, d, p), tmp / "B.safetensors")


def test_attack_file_stores_the_source_adversarial_class(attacks):
    a, _, pa, _ = attacks
    f = read_satkit_file(pa, "satkit.attack")
    with torch.no_grad():
        pred = a.module(f.get("adv").float() / 255).argmax(1)
    assert torch.equal(f.get("source_adv_pred"), pred)
    assert torch.equal(pred == f.get("labels"), f.get("source_adv_correct"))


def test_same_class_counts_match_direct_computation(attacks):
    a, b, pa, pb = attacks
    files = open_attack_files([pa, pb])
    for target in (a, b):
        for row in run_transfer(target, files, batch_size=7).rows:
            f = files[0] if row["source"] == a.name else files[1]
            y = f.get("labels")
            with torch.no_grad():
                tc = target.module(f.get("clean").float() / 255).argmax(1) == y
                ta = target.module(f.get("adv").float() / 255).argmax(1)
            both = f.get("source_correct") & tc
            same = both & (ta != y) & (ta == f.get("source_adv_pred"))
            assert row["n_same_class"] == int(same.sum())
            assert row["n_same_class"] <= row["n_fooled"]
            if row["source"] == row["target"]:
                assert row["n_same_class"] == row["n_fooled"]  # a model agrees with itself
    assert any(r["n_same_class"] < r["n_fooled"] for r in run_transfer(b, files).rows)  # the check can fail


def _table(rows):
    cols = ["source", "target", "n_both", "n_fooled", "n_same_class"]
    return pl.DataFrame([dict(zip(cols, r)) for r in rows])


def test_matrix_of_same_class_rates_by_hand():
    # |X_AB| = 10; A -> B fools 6, 4 of them into A's class; B -> A fools 5, 2 into B's class
    t = _table([("A", "A", 20, 18, 18), ("B", "B", 16, 12, 12), ("A", "B", 10, 6, 4), ("B", "A", 10, 5, 2)])
    m = build_matrix([t])
    assert m.names == ["A", "B"]
    assert math.isclose(m.same_class[0, 1], (4 / 10 + 2 / 10) / 2) and m.same_class[1, 0] == m.same_class[0, 1]
    assert math.isclose(m.same_class[0, 0], 18 / 20) and math.isclose(m.same_class[1, 1], 12 / 16)
    row = m.long.filter((pl.col("a") == "A") & (pl.col("b") == "B")).row(0, named=True)
    assert math.isclose(row["same_class_a_to_b"], 0.4) and math.isclose(row["same_class_b_to_a"], 0.2)
    assert math.isclose(row["sat"], math.log(100 * (6 + 5) / 20))  # SAT itself is unchanged by the new column


def test_same_class_above_fooled_is_refused():
    t = _table([("A", "B", 10, 3, 4), ("B", "A", 10, 3, 1)])
    with pytest.raises(InputFileError, match="n_same_class .4. exceeds n_fooled .3."):
        build_matrix([t])


def test_old_tables_without_the_column_still_build():
    old = _table([("A", "A", 20, 18, 0), ("B", "B", 16, 12, 0), ("A", "B", 10, 6, 0), ("B", "A", 10, 5, 0)]).drop("n_same_class")
    m = build_matrix([old])
    assert m.same_class is None and "same_class_a_to_b" not in m.long.columns
    assert math.isclose(m.values[0, 1], math.log(100 * 11 / 20))


def test_old_attack_files_are_read_and_give_empty_same_class(attacks, tmp_path):
    a, _, pa, pb = attacks
    old = rewrite(pa, tmp_path / "old.safetensors", lambda t: t.pop("source_adv_pred"))
    files = open_attack_files([old, pb])
    rows = {r["source"]: r for r in run_transfer(a, files).rows}
    assert rows[a.name]["n_same_class"] is None and rows["digits/vit-s1"]["n_same_class"] is not None


def test_tampered_adversarial_class_is_refused(attacks, tmp_path):
    _, _, pa, _ = attacks

    def flip(t):  # a fooled sample's class set to its label: no longer fooled, against source_adv_correct
        t["source_adv_pred"] = t["source_adv_pred"].clone()
        i = int(torch.nonzero(~t["source_adv_correct"])[0])
        t["source_adv_pred"][i] = t["labels"][i]

    refused(rewrite(pa, tmp_path / "x.safetensors", flip), "'source_adv_pred'", "disagrees")

    def out_of_range(t):
        t["source_adv_pred"] = t["source_adv_pred"].clone()
        t["source_adv_pred"][0] = 10

    refused(rewrite(pa, tmp_path / "y.safetensors", out_of_range), "'source_adv_pred'", "outside 0..9")


def test_cli_matrix_same_class(tmp_path):
    d = tmp_path
    for m in ("resnet-s1", "vit-s1"):
        run("attack", f"digits/{m}", "--n", "40", "--steps", "5", "-q", "-o", d / f"{m}.safetensors")
    for m in ("resnet-s1", "vit-s1"):
        run("transfer", f"digits/{m}", d / "resnet-s1.safetensors", d / "vit-s1.safetensors", "-q", "-o", d / f"t-{m}.csv")
    run("matrix", d / "t-resnet-s1.csv", d / "t-vit-s1.csv", "-o", d / "sat.csv", "--same-class", d / "same.csv",
        "--long", d / "long.csv", "--no-show")
    same = pl.read_csv(d / "same.csv")
    long = pl.read_csv(d / "long.csv")
    cross = long.filter(pl.col("a") != pl.col("b")).row(0, named=True)
    assert math.isclose(same["digits/vit-s1"][0], (cross["same_class_a_to_b"] + cross["same_class_b_to_a"]) / 2)
    old = pl.read_csv(d / "t-resnet-s1.csv").drop("n_same_class")
    old.write_csv(d / "old.csv")
    r = run("matrix", d / "old.csv", d / "t-vit-s1.csv", "-o", d / "sat2.csv", "--same-class", d / "same2.csv", ok=False)
    assert_clean_error(r, "--same-class", "n_same_class")
    assert not (d / "same2.csv").exists() and not (d / "sat2.csv").exists()
