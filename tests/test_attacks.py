"""Every registered attack: the eps bound on stored files, determinism, the registry and its CLI options."""

import json

import pytest
import torch

from satkit.attacks import ATTACKS, AttackParams, run_attack, save_attack
from satkit.attacks.lowfreq import lowpass_projection
from satkit.attacks.noise import SampleNoise
from satkit.errors import ParameterError
from satkit.formats import read_satkit_file
from tests.cli_helpers import assert_clean_error, run
from tests.conftest import tiny_model
from tests.test_attack import _bound_holds

NAMES = sorted(ATTACKS)
# small settings per attack, so each case runs in well under a second on the tiny model
FAST = {"vmifgsm": {"samples": 2}}


def _params(name, **kw):
    kw.setdefault("steps", 4)
    kw.setdefault("eps", 0.1)
    return AttackParams(attack=name, options={**FAST.get(name, {}), **kw.pop("options", {})}, **kw)


def test_registry_holds_the_issue_attacks():
    assert {"pgd", "mifgsm", "vmifgsm", "apgd-ce", "lf-pgd"} <= set(ATTACKS)
    for spec in ATTACKS.values():
        assert spec.summary and spec.reference and spec.step_rule
        assert spec.default_step(0.1, 10) > 0


@pytest.mark.parametrize("storage", ["uint8", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_bound_holds_on_stored_file(tmp_path, digits_small, name, storage):
    res = run_attack(tiny_model(), digits_small, _params(name, storage=storage), batch_size=32)
    out = save_attack(res, tmp_path / "a.safetensors")
    dmax, lo, hi = _bound_holds(out, 0.1)
    assert dmax <= 0.1 and 0.0 <= lo and hi <= 1.0
    assert dmax > 0.02  # the attack moved the images
    prov = read_satkit_file(out, "satkit.attack").provenance
    assert prov["attack"]["attack"] == name
    assert prov["attack"] == _params(name, storage=storage).to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_result_does_not_depend_on_batch_size(digits_small, name):
    """Per-sample seeding (random start and in-loop sampling): batch 7 and batch 32 store the same images."""
    a = run_attack(tiny_model(), digits_small, _params(name), batch_size=7)
    b = run_attack(tiny_model(), digits_small, _params(name), batch_size=32)
    assert torch.equal(a.tensors["adv"], b.tensors["adv"])
    c = run_attack(tiny_model(), digits_small, _params(name, seed=5), batch_size=32)
    if c.provenance["attack"]["random_start"] or name == "vmifgsm":  # seeded randomness: another seed, other images
        assert not torch.equal(a.tensors["adv"], c.tensors["adv"])


def test_mifgsm_without_momentum_is_iterative_fgsm(digits_small):
    """decay 0: the step is sign(grad / |grad|_1) = sign(grad), i.e. PGD without random start at step eps/steps."""
    m = run_attack(tiny_model(), digits_small, _params("mifgsm", options={"decay": 0.0}), batch_size=32)
    p = run_attack(tiny_model(), digits_small, _params("pgd", random_start=False, step_size=0.1 / 4), batch_size=32)
    assert torch.equal(m.tensors["adv"], p.tensors["adv"])


def test_vmifgsm_with_a_zero_radius_is_mifgsm(digits_small):
    """beta 0: the one neighbour is the point itself, its gradient variance is exactly 0."""
    v = run_attack(tiny_model(), digits_small, _params("vmifgsm", options={"beta": 0.0, "samples": 1}), batch_size=32)
    m = run_attack(tiny_model(), digits_small, _params("mifgsm"), batch_size=32)
    assert torch.equal(v.tensors["adv"], m.tensors["adv"])


def test_lf_pgd_perturbation_is_low_frequency():
    """Far from the clip bounds, the perturbation lies in the band: projecting it again changes nothing."""
    torch.manual_seed(0)
    net = tiny_model().module
    x = torch.full((3, 1, 16, 16), 0.5)
    y = torch.tensor([1, 2, 3])
    adv = ATTACKS["lf-pgd"].fn(net, x, y, eps=0.4, steps=2, alpha=0.01, init=None, band=0.25)
    d = adv - x
    ph = lowpass_projection(16, 0.25)
    assert d.abs().max() > 1e-3
    assert torch.allclose(ph @ d @ ph.T, d, atol=1e-6)
    assert torch.linalg.matrix_rank(d[0, 0].double(), atol=1e-5) <= 4  # 4 of 16 frequencies per axis


def test_lowpass_projection_is_an_orthogonal_projection():
    p = lowpass_projection(12, 0.25).double()
    assert torch.allclose(p @ p, p, atol=1e-6) and torch.allclose(p, p.T, atol=1e-7)
    assert round(float(torch.trace(p))) == 3
    assert torch.allclose(lowpass_projection(8, 1.0).double(), torch.eye(8, dtype=torch.float64), atol=1e-6)


def test_sample_noise_is_per_sample():
    a = SampleNoise(torch.tensor([1, 3, 5, 7]), seed=0).uniform(4, (2, 3))
    b = SampleNoise(torch.tensor([7, 3]), seed=0).uniform(4, (2, 3))
    assert torch.equal(a[[3, 1]], b)
    assert a.shape == (4, 2, 3) and a.dtype == torch.float32
    big = SampleNoise(torch.arange(64), seed=1).uniform(0, (1000,))
    assert big.min() >= -1 and big.max() < 1
    assert abs(float(big.mean())) < 0.01 and abs(float(big.var()) - 1 / 3) < 0.01  # U(-1, 1)
    assert not torch.equal(SampleNoise(torch.arange(4), 1).uniform(0, (9,)), SampleNoise(torch.arange(4), 2).uniform(0, (9,)))
    assert not torch.equal(SampleNoise(torch.arange(4), 1).uniform(0, (9,)), SampleNoise(torch.arange(4), 1).uniform(1, (9,)))
    huge = SampleNoise(torch.tensor([2**40 + 1, 1]), seed=0).uniform(0, (5,))  # ids past 32 bits still differ
    assert not torch.equal(huge[0], huge[1])


def test_options_are_validated_and_defaulted():
    assert AttackParams(attack="mifgsm") == AttackParams(attack="mifgsm", options={"decay": 1.0})
    assert AttackParams(attack="vmifgsm").option_values == {"beta": 1.5, "decay": 1.0, "samples": 20}
    assert AttackParams(attack="vmifgsm", steps=10).gradients_per_sample == 210
    assert "options" not in AttackParams().to_dict()  # PGD's provenance (and attack keys) as before
    assert AttackParams(attack="mifgsm").random_start is False and AttackParams().random_start is True
    with pytest.raises(ParameterError, match="--decay does not apply to --attack pgd"):
        AttackParams(options={"decay": 0.5})
    with pytest.raises(ParameterError, match="--vmi-samples must be an integer"):
        AttackParams(attack="vmifgsm", options={"samples": 2.5})
    with pytest.raises(ParameterError, match="--band"):
        AttackParams(attack="lf-pgd", options={"band": 0})
    with pytest.raises(ParameterError, match="unknown attack"):
        AttackParams(attack="cw")


def test_params_round_trip_through_provenance():
    for name in NAMES:
        p = _params(name, storage="float16", seed=3)
        assert AttackParams.from_dict(json.loads(json.dumps(p.to_dict()))).to_dict() == p.to_dict()


@pytest.mark.parametrize("command", ["attack", "study"])
def test_every_attack_and_option_is_in_the_help(command):
    text = " ".join(run(command, "--help").stdout.split())
    for name, spec in ATTACKS.items():
        assert name in text
        for o in spec.options:
            assert o.flag in text and name in text


def test_cli_attack_records_the_attack_and_reruns_from_info(tmp_path):
    out = tmp_path / "v.safetensors"
    r = run("attack", "digits/resnet-s1", "--attack", "vmifgsm", "--vmi-samples", "2", "--steps", "3", "--n", "30",
            "-o", out)
    assert "vmifgsm" in r.stderr and "stored 25/255" in r.stderr
    prov = read_satkit_file(out, "satkit.attack").provenance
    assert prov["attack"]["options"] == {"beta": 1.5, "decay": 1.0, "samples": 2}
    assert prov["attack"]["random_start"] is False
    rerun = [ln for ln in run("info", out).stdout.splitlines() if "rerun:" in ln][0]
    args = rerun.split("rerun: satkit ")[1].replace("OUT.safetensors", str(tmp_path / "again.safetensors")).split()
    run(*args)
    again = read_satkit_file(tmp_path / "again.safetensors", "satkit.attack")
    assert torch.equal(again.get("adv"), read_satkit_file(out, "satkit.attack").get("adv"))


@pytest.mark.parametrize("argv, words", [
    (["--attack", "cw"], ["unknown attack 'cw'", "pgd"]),
    (["--decay", "0.5"], ["--decay does not apply to --attack pgd"]),
    (["--attack", "mifgsm", "--band", "0.5"], ["--band", "mifgsm", "--decay"]),
    (["--attack", "vmifgsm", "--vmi-samples", "0"], ["--vmi-samples", "[1, 1000]"]),
])
def test_bad_attack_options_fail_cleanly(tmp_path, argv, words):
    out = tmp_path / "a.safetensors"
    assert_clean_error(run("attack", "digits/resnet-s1", "--n", "20", *argv, "-o", out, ok=False), *words)
    assert not out.exists()


@pytest.mark.slow
def test_study_with_another_attack_resumes_and_reports(tmp_path):
    out = tmp_path / "s"
    args = ("study", "digits/resnet-s1", "digits/vit-s1", "--attack", "mifgsm", "--n", "40", "--steps", "3",
            "--no-analyses", "-o", out)
    run(*args)
    settings = json.loads((out / "study.json").read_text())
    assert settings["attack"]["attack"] == "mifgsm" and settings["attack"]["options"] == {"decay": 1.0}
    first = (out / "sat.csv").read_bytes()
    r = run(*args)
    assert "0 attack(s) run, 2 reused" in r.stderr and (out / "sat.csv").read_bytes() == first
    r = run(*args[:-2], "--decay", "0.5", "-o", out)  # another option: another attack, redone
    assert "2 attack(s) run" in r.stderr
    plan = run("study", "digits/resnet-s1", "--attack", "vmifgsm", "--vmi-samples", "4", "--steps", "2", "--n", "40",
               "--plan", "-o", tmp_path / "p").stdout
    assert "400" in plan  # 40 images x 2 steps x (1 + 4) gradients
