"""APGD-CE: the checkpoint schedule, the eps bound, determinism, NaN visibility, strength vs PGD."""

import math
from fractions import Fraction
from itertools import pairwise

import pytest
import torch
import torch.nn as nn

from satkit.attacks import AttackParams, run_attack
from satkit.attacks.apgd import apgd_ce, apgd_checkpoints
from satkit.attacks.pgd import pgd_linf
from satkit.errors import ParameterError
from tests.conftest import tiny_model


def _paper_checkpoints(n_iter: int) -> list[int]:
    """Section 3.2 in exact rationals: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    w = sorted({math.ceil(pj * n_iter) for pj in p if pj <= 1})
    return w


def _reference_checkpoints(n_iter: int) -> list[int]:
    """AutoAttack's counters (autopgd_base.py): first window int(0.22 N), shrinking by int(0.03 N) down to int(0.06 N)."""
    k, size_decr, k_min = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out, w = [0], 0
    while w + k <= n_iter:
        w += k
        out.append(w)
        k = max(k - size_decr, k_min)
    return out


def test_checkpoints_100_steps_are_the_published_ones():
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert _reference_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]  # the reference code agrees at 100


@pytest.mark.parametrize("n_iter", [1, 2, 5, 10, 20, 50, 100, 250, 1000])
def test_checkpoints_follow_the_formula(n_iter):
    w = apgd_checkpoints(n_iter)
    assert w == _paper_checkpoints(n_iter)  # float p_j would give 42 for p_2 = 0.41 at 100 steps
    assert w[0] == 0 and w[-1] <= n_iter and all(a < b for a, b in pairwise(w))


def _batch(n=8, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, size, size), generator=g)
    x[:, :, :3] = 0.0  # pixels on both edges of [0, 1]: the projection must clip there
    x[:, :, -3:] = 1.0
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, g


@pytest.mark.parametrize("use_init", [False, True])
@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])  # fp16: the rescaled-gradient path
def test_stays_in_eps_ball_and_unit_box(use_init, amp_dtype):
    net = tiny_model().module
    x, y, g = _batch()
    eps = 0.1
    init = (torch.rand(x.shape, generator=g) * 2 - 1) * eps if use_init else None
    adv = apgd_ce(net, x, y, eps=eps, steps=12, alpha=2 * eps, init=init, amp_dtype=amp_dtype)
    assert adv.dtype == torch.float32 and adv.shape == x.shape
    d = (adv.double() - x.double()).abs()
    assert d.max() <= eps + 1e-6  # x - eps rounds in float32: one ulp
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert d.max() > 0.5 * eps  # it moved


def test_deterministic_and_independent_of_batch_mates():
    net = tiny_model().module
    x, y, g = _batch(8)
    init = (torch.rand(x.shape, generator=g) * 2 - 1) * 0.1
    kw = {"eps": 0.1, "steps": 10, "alpha": 0.2}
    a = apgd_ce(net, x, y, init=init, **kw)
    assert torch.equal(a, apgd_ce(net, x, y, init=init, **kw))
    # same batch size, other companions: every decision (step size, restart, best point) is per sample
    x2, y2, g2 = _batch(8, seed=1)
    init2 = (torch.rand(x.shape, generator=g2) * 2 - 1) * 0.1
    x2[0], y2[0], init2[0] = x[0], y[0], init[0]
    assert torch.equal(apgd_ce(net, x2, y2, init=init2, **kw)[0], a[0])
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])
    assert torch.equal(apgd_ce(net, x[perm], y[perm], init=init[perm], **kw), a[perm])


def test_fools_a_linear_model_at_large_eps():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10)).requires_grad_(False)
    x, y, _ = _batch(16)
    with torch.no_grad():
        y = net(x).argmax(1)  # every sample correct to start with
    adv = apgd_ce(net, x, y, eps=0.5, steps=10, alpha=1.0)
    with torch.no_grad():
        assert (net(adv).argmax(1) != y).all()


def test_non_finite_gradient_reaches_the_output():
    class NanOnFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(256, 10).requires_grad_(False)

        def forward(self, x):
            scale = torch.ones(len(x), 1)
            scale[0] = float("nan")
            return self.lin(x.flatten(1)) * scale

    x, y, _ = _batch(4)
    adv = apgd_ce(NanOnFirst(), x, y, eps=0.1, steps=3, alpha=0.2)
    assert torch.isnan(adv[0]).all()  # the runner's per-batch finiteness check sees it
    assert torch.isfinite(adv[1:]).all()


def test_registered_with_rho_option(digits_small):
    p = AttackParams(eps=0.1, steps=5, attack="apgd-ce")
    assert p.alpha == pytest.approx(0.2) and p.random_start is True
    assert p.to_dict()["options"] == {"rho": 0.75}
    with pytest.raises(ParameterError):
        AttackParams(attack="apgd-ce", options={"rho": 1.5})
    res = run_attack(tiny_model(), digits_small, AttackParams(eps=0.1, steps=5, attack="apgd-ce", options={"rho": 0.5}))
    assert res.success_rate > 0.5
    d = (res.tensors["adv"].int() - res.tensors["clean"].int()).abs().max()
    assert 0 < d <= 25  # 0.1 = 25.5 eight-bit steps


@pytest.mark.slow  # ~4 s alone, 15+ s on a busy 2-core machine
def test_at_least_as_strong_as_pgd_on_a_zoo_model():
    from satkit.attacks.runner import random_start_noise
    from satkit.data.loaders import load_digits_set
    from satkit.io.pixels import pixels_on
    from satkit.models import load_model

    net = load_model("digits/resnet-s1").module
    data = load_digits_set("test", n=40)
    x, y = pixels_on(data.images), data.labels
    eps, steps = 0.05, 10  # PGD fools about half here: room for either to be better
    init = random_start_noise(data.ids, tuple(x.shape[1:]), eps, seed=0)
    apgd = apgd_ce(net, x, y, eps=eps, steps=steps, alpha=AttackParams(eps=eps, steps=steps, attack="apgd-ce").alpha, init=init)
    pgd = pgd_linf(net, x, y, eps=eps, steps=steps, alpha=AttackParams(eps=eps, steps=steps).alpha, init=init)
    with torch.inference_mode():
        correct = net(x).argmax(1) == y
        fooled_apgd = (net(apgd).argmax(1) != y)[correct].sum()
        fooled_pgd = (net(pgd).argmax(1) != y)[correct].sum()
    assert fooled_apgd >= fooled_pgd > 0
