"""Attacks behind a small registry; PGD (L-infinity) is the paper's and the default."""

from satkit.attacks.apgd import apgd_ce  # noqa: F401  (registers "apgd-ce")
from satkit.attacks.base import ATTACKS, AttackParams, register_attack
from satkit.attacks.lowfreq import lf_pgd  # noqa: F401  (registers "lf-pgd")
from satkit.attacks.momentum import mifgsm, vmifgsm  # noqa: F401  (registers "mifgsm", "vmifgsm")
from satkit.attacks.pgd import pgd_linf  # noqa: F401  (registers "pgd")
from satkit.attacks.quantize import STORAGE_DTYPES, eps_steps_uint8, quantize_adv
from satkit.attacks.runner import AttackResult, run_attack, save_attack

__all__ = [
    "ATTACKS",
    "AttackParams",
    "AttackResult",
    "STORAGE_DTYPES",
    "eps_steps_uint8",
    "quantize_adv",
    "register_attack",
    "run_attack",
    "save_attack",
]
