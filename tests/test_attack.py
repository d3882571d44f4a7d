"""PGD: the eps bound on stored files, determinism, attack strength."""

import hashlib

import pytest
import torch

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.attacks.quantize import eps_steps_uint8, quantize_adv
from satkit.errors import DataError, ParameterError
from satkit.formats import read_satkit_file
from tests.conftest import tiny_model


def _bound_holds(path, eps):
    f = read_satkit_file(path, "satkit.attack")
    clean, adv = f.get("clean"), f.get("adv")
    if adv.dtype == torch.uint8:  # 8-bit pixel v means v/255: the difference is an exact integer count of steps
        d = (adv.to(torch.int64) - clean.to(torch.int64)).abs().max().item() / 255
        return d, adv.min().item() / 255, adv.max().item() / 255
    c64, a64 = clean.to(torch.float64), adv.to(torch.float64)
    return (a64 - c64).abs().max().item(), a64.min().item(), a64.max().item()


@pytest.mark.parametrize("storage", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("eps", [8 / 255, 0.05, 0.1])
def test_bound_holds_exactly_on_stored_file(tmp_path, digits_small, storage, eps):
    lm = tiny_model()
    res = run_attack(lm, digits_small, AttackParams(eps=eps, steps=5, storage=storage), batch_size=32)
    out = save_attack(res, tmp_path / f"a_{storage}.safetensors")
    dmax, lo, hi = _bound_holds(out, eps)
    assert dmax <= eps  # exactly, in float64 on the stored values
    assert 0.0 <= lo and hi <= 1.0
    assert dmax > 0.5 * eps  # and the attack actually used its budget
    f = read_satkit_file(out, "satkit.attack")
    assert f.get("adv").dtype == {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}[storage]
    assert f.get("labels").dtype == torch.int64 and f.get("ids").dtype == torch.int64
    assert f.get("source_correct").dtype == torch.bool


def test_quantize_pulls_back_rounding_overshoot():
    clean = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float16)
    eps = 0.01
    adv = clean.float() + torch.tensor([eps, -eps, eps]) * 1.0004  # just outside after fp16 rounding
    q = quantize_adv(adv, clean, eps, "float16")
    assert ((q.double() - clean.double()).abs() <= eps).all()


def test_eps_steps_uint8():
    assert eps_steps_uint8(8 / 255) == 8
    assert eps_steps_uint8(0.1) == 25
    assert eps_steps_uint8(0.0313725) == 7  # just under 8/255
    assert eps_steps_uint8(0.0) == 0


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.mark.parametrize("random_start", [False, True])
def test_same_seed_same_bytes(tmp_path, digits_small, random_start):
    p = AttackParams(eps=0.1, steps=5, random_start=random_start, seed=3)
    a = save_attack(run_attack(tiny_model(), digits_small, p, batch_size=16), tmp_path / "a.safetensors")
    b = save_attack(run_attack(tiny_model(), digits_small, p, batch_size=16), tmp_path / "b.safetensors")
    assert _sha(a) == _sha(b)  # byte-identical (batch size is an input: kernels may sum in another order)


def test_seed_changes_random_start(tmp_path, digits_small):
    r1 = run_attack(tiny_model(), digits_small, AttackParams(eps=0.1, steps=1, seed=1))
    r2 = run_attack(tiny_model(), digits_small, AttackParams(eps=0.1, steps=1, seed=2))
    assert not torch.equal(r1.tensors["adv"], r2.tensors["adv"])


def test_pgd_beats_fgsm_like_single_step(digits_small):
    # more steps -> at least as many fooled (a sanity check that the loop ascends the loss)
    lm = tiny_model()
    one = run_attack(lm, digits_small, AttackParams(eps=0.05, steps=1, random_start=False))
    many = run_attack(lm, digits_small, AttackParams(eps=0.05, steps=20, random_start=False))
    assert (~many.tensors["source_adv_correct"]).sum() >= (~one.tensors["source_adv_correct"]).sum()


def test_zero_eps_changes_nothing(digits_small):
    r = run_attack(tiny_model(), digits_small, AttackParams(eps=0.0, steps=3))
    assert torch.equal(r.tensors["adv"], r.tensors["clean"])


@pytest.mark.parametrize("kw", [dict(eps=-0.1), dict(eps=1.5), dict(steps=0), dict(steps=-3), dict(step_size=0.0), dict(storage="int4")])
def test_bad_parameters(kw):
    with pytest.raises(ParameterError):
        AttackParams(**kw)


def test_bad_batch_size(digits_small):
    with pytest.raises(ParameterError):
        run_attack(tiny_model(), digits_small, AttackParams(steps=1), batch_size=0)


def test_labels_out_of_range(digits_small):
    with pytest.raises(DataError, match="classes"):
        run_attack(tiny_model(num_classes=5), digits_small, AttackParams(steps=1))


def test_provenance(tmp_path, digits_small):
    r = run_attack(tiny_model(), digits_small, AttackParams(eps=0.1, steps=2))
    f = read_satkit_file(save_attack(r, tmp_path / "a.safetensors", rerun="satkit attack x"), "satkit.attack")
    p = f.provenance
    assert p["model"]["weights_id"] == "test:tiny:0"
    assert p["attack"]["eps"] == 0.1 and p["attack"]["steps"] == 2 and p["attack"]["step_size"] == pytest.approx(0.125)
    assert p["data"]["fingerprint"] == digits_small.fingerprint and p["data"]["canvas"] == [1, 16, 16]
    assert set(p["versions"]) >= {"satkit", "torch", "timm"}
    assert p["storage_dtype"] == "uint8" and p["rerun"] == "satkit attack x"
    assert f.format == "satkit.attack" and f.version == 1
