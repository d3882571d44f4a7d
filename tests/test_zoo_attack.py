"""The digits study defaults: every zoo model's own PGD attack succeeds >= 90 % at the default eps."""

import pytest

from satkit.attacks import AttackParams, run_attack
from satkit.data import load_data
from satkit.models import load_model, zoo
from satkit.study import DIGITS_EPS

pytestmark = pytest.mark.slow  # every zoo model attacked at the default budget


@pytest.fixture(scope="module")
def sample():
    return load_data("digits", n=30, seed=0)  # 3 per class: enough to see a >= 90 % success rate


@pytest.mark.parametrize("name", list(zoo.ZOO_MODELS))
def test_self_attack_success_at_default_eps(name, sample):
    lm = load_model(f"digits/{name}")
    res = run_attack(lm, sample, AttackParams(eps=DIGITS_EPS, steps=50))
    assert res.clean_accuracy >= 0.9
    assert res.success_rate >= 0.9, f"{name}: {res.success_rate:.2%}"
