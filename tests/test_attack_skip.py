"""Only samples the source classifies correctly are attacked; every result SAT reads is unchanged."""

import json

import pytest
import torch

from satkit.formats import read_satkit_file
from tests.cli_helpers import run

MODELS = ("digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1")
# vit-s1 misclassifies a few of the first 150 digits: its file has unattacked rows
SMALL = ("--n", "150", "--steps", "4")


def test_cli_attack_reports_and_stores_the_skip(tmp_path):
    skip, full = tmp_path / "skip.safetensors", tmp_path / "all.safetensors"
    r = run("attack", "digits/vit-s1", *SMALL, "-o", skip)
    f = read_satkit_file(skip, "satkit.attack")
    sc = f.get("source_correct")
    wrong = int((~sc).sum())
    assert wrong > 0
    assert f.provenance["stats"]["attacked"] == 150 - wrong
    assert f"{wrong} misclassified image(s) not attacked" in r.stderr and "--attack-all" in r.stderr
    assert torch.equal(f.get("adv")[~sc], f.get("clean")[~sc])  # stored unattacked, marked by source_correct
    assert "attack_all" not in f.provenance["attack"]
    run("attack", "digits/vit-s1", *SMALL, "--attack-all", "-o", full)
    g = read_satkit_file(full, "satkit.attack")
    assert g.provenance["attack"]["attack_all"] is True and g.provenance["stats"]["attacked"] == 150
    assert not torch.equal(g.get("adv")[~sc], g.get("clean")[~sc])
    # the samples SAT reads get the same adversarials, whichever others share their batches
    assert torch.equal(f.get("adv")[sc], g.get("adv")[sc])
    assert f.provenance["attack_key"] != g.provenance["attack_key"]
    assert "--attack-all" in run("info", full).stdout


@pytest.mark.slow
def test_study_results_are_identical_with_and_without_attack_all(tmp_path):
    """sat.csv byte for byte, and the long table, same-class rates, ensembles and approx rows."""
    a, b = tmp_path / "skip", tmp_path / "all"
    run("study", *MODELS, *SMALL, "-o", a, "-q")
    run("study", *MODELS, *SMALL, "--attack-all", "-o", b, "-q")
    for name in ("sat.csv", "sat_long.csv", "same_class.csv", "ensemble.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    settings = json.loads((b / "study.json").read_text())
    assert settings["attack"]["attack_all"] is True
    # approx of a known model from each study: the same rows
    for d in (a, b):
        run("approx", "digits/resnet-s2", "--study", d, "-o", d / "approx.csv", "-q")
    assert (a / "approx.csv").read_bytes() == (b / "approx.csv").read_bytes()
    # --attack-all is part of "is this attack current": switching back redoes the attacks
    plan = run("study", *MODELS, *SMALL, "--plan", "-o", b).stdout
    assert "pgd forward+backward passes (images, at most)" in plan
    assert "attacks to run: 3 (0 already done)" in plan, plan
