"""One rule, every path: --plan and the run agree; `satkit attack` and the study write the same file;
a failed study leaves study.json as it was; a second run on the directory waits or stops."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from satkit.attacks import AttackParams
from satkit.study import StudyConfig, plan_study, run_study
from tests.conftest import TinyCNN, save_program

from cli_helpers import assert_clean_error, run

BASE = dict(n=30, params=AttackParams(eps=0.1, steps=2), analyses=False)


def _program(path: Path, seed: int) -> str:
    return str(save_program(TinyCNN(seed=seed), path))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished two-model study of .pt2 files (tiny models: every run takes about a second)."""
    root = tmp_path_factory.mktemp("rules")
    models = [_program(root / "m1.pt2", 1), _program(root / "m2.pt2", 2)]
    run_study(StudyConfig.create(models, root / "study", **BASE))
    return root, models


CHANGES = {
    "n": dict(n=40),
    "eps": dict(params=AttackParams(eps=0.2, steps=2)),
    "steps": dict(params=AttackParams(eps=0.1, steps=3)),
    "storage": dict(params=AttackParams(eps=0.1, steps=2, storage="float16")),
    "data": dict(data="digits:train"),
    "data-seed": dict(data_seed=1),
    "amp": dict(amp="bf16"),
    "nothing": dict(),
}


@pytest.mark.parametrize("change", sorted(CHANGES) + ["weights"])
def test_plan_and_run_agree(base, tmp_path, change):
    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    models = list(models)
    if change == "weights":  # same file name (same model name), other weights
        models[1] = _program(tmp_path / "m2.pt2", 7)
        shutil.copy(root / "m1.pt2", tmp_path / "m1.pt2")
        models[0] = str(tmp_path / "m1.pt2")
        for name in ("attacks", "transfer"):  # the stored files name the models by path: rename them
            for p in (out / name).iterdir():
                p.rename(p.with_name(p.name.replace(str(root).strip("/").replace("/", "__"), str(tmp_path).strip("/").replace("/", "__"))))
    cfg = StudyConfig.create(models, out, **(BASE | CHANGES.get(change, {})))
    plan = plan_study(cfg)
    res = run_study(cfg)
    assert (plan.attacks, plan.transfer_evaluations) == (res.attacks_run, res.transfer_evaluations), change
    expect = {"nothing": (0, 0), "weights": (1, 3)}.get(change, (2, 4))
    assert (res.attacks_run, res.transfer_evaluations) == expect, change


def test_cli_plan_counts_what_the_run_does(base, tmp_path):
    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    args = ["study", *models, "--n", 40, "--steps", 2, "--eps", 0.1, "--no-analyses", "-o", out]
    plan = run(*args, "--plan").stdout
    assert "attacks to run: 2 (0 already done)" in plan and "transfer evaluations to run: 4" in plan
    r = run(*args)
    assert "2 attack(s) run, 0 reused; 4 transfer evaluation(s) run" in r.stderr.replace("\n", " ")


def test_failed_study_leaves_study_json_byte_identical(base, tmp_path):
    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    before = (out / "study.json").read_bytes()
    for bad in (["digits/resnet-s1", "resnet50"], [models[0], str(tmp_path / "missing.pt2")]):
        r = run("study", *bad, "--n", 30, "--steps", 2, "--no-analyses", "-o", out, ok=False)
        assert_clean_error(r)
        assert (out / "study.json").read_bytes() == before
    from satkit.study import read_settings

    assert read_settings(out).models == tuple(models)  # approx --study still sees the finished study


def test_second_run_on_a_locked_study_stops_with_who_holds_it(base, tmp_path):
    from satkit.io.lock import DirectoryLock

    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    with DirectoryLock(out):
        r = run("study", *models, "--n", 30, "--steps", 2, "--eps", 0.1, "--no-analyses", "-o", out, ok=False)
    assert_clean_error(r, "in use")


@pytest.mark.slow
def test_attack_command_defaults_equal_the_study_file(tmp_path):
    """`satkit attack M -o f` and `satkit study M` with defaults write the same adversarial tensors.

    Defaults except --n: 160 images are two batches at the default batch size, so a
    different default batch size (or eps, steps, storage, seed) in either command shows.
    """
    m = "digits/resnet-s2"
    run("study", m, "--n", 160, "--no-analyses", "-o", tmp_path / "s")
    run("attack", m, "--n", 160, "-o", tmp_path / "a.safetensors")
    from satkit.study import slug

    a = load_file(str(tmp_path / "a.safetensors"))
    s = load_file(str(tmp_path / "s" / "attacks" / f"{slug(m)}.safetensors"))
    assert a.keys() == s.keys()
    for k in a:
        assert torch.equal(a[k], s[k]), k


def test_rerun_removes_partial_files_of_a_killed_run_everywhere(base, tmp_path):
    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    left = [out / "logits" / ".m1.safetensors.x1.partial", out / "attacks" / ".m2.safetensors.x2.partial", out / ".sat.csv.x3.partial"]
    for p in left:
        p.write_bytes(b"half")
    res = run_study(StudyConfig.create(models, out, **BASE))
    assert res.attacks_run == 0 and not [p for p in left if p.exists()]


def test_study_json_round_trips_every_setting(tmp_path):
    """What approx --study needs to rebuild the clean set and the attack comes back from study.json as written."""
    from satkit.data import DataRequest
    from satkit.study.layout import StudyDir, StudySettings, read_settings, write_settings

    st = StudySettings(models=("a.pt", "digits/vit-s1"), data=DataRequest("val/", 50, 3, 224, "LOC_val_solution.csv"),
                       params=AttackParams(eps=4 / 255, steps=7, storage="float16"), amp="bf16", eps_s=0.5,
                       fingerprint="f" * 32, cluster_method="njw")
    write_settings(StudyDir(tmp_path), st)
    back = read_settings(tmp_path)
    assert back.params.to_dict() == st.params.to_dict()  # the default step size comes back as its value
    assert replace(back, params=st.params) == st


def test_study_transfer_job_verifies_the_attack_files_it_reads(base, tmp_path):
    """Keys are only peeked at to plan the wave; a file a target is evaluated on is verified before use."""
    from satkit.errors import InputFileError
    from satkit.study import slug
    from tests.test_verify import rewrite

    root, models = base
    out = tmp_path / "study"
    shutil.copytree(root / "study", out)
    (out / "transfer" / f"{slug(models[0])}.csv").unlink()  # m1 must be evaluated again, on every attack file
    victim = out / "attacks" / f"{slug(models[1])}.safetensors"

    def push(t):
        t["adv"] = t["clean"].clone()
        t["adv"][0, 0, 0, 0] = 255 if int(t["clean"][0, 0, 0, 0]) < 128 else 0  # far beyond eps = 0.1

    rewrite(victim, victim, tensors=push)
    with pytest.raises(InputFileError, match="eps"):
        run_study(StudyConfig.create(models, out, **BASE))
