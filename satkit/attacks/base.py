"""Attack parameters and the attack registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from satkit.errors import ParameterError

ATTACKS: dict[str, Callable[..., Any]] = {}


def register_attack(name: str):
    def deco(fn):
        ATTACKS[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class AttackParams:
    """PGD L-infinity settings. ``eps`` and ``step_size`` are in pixel scale ([0, 1]).

    ``step_size=None`` means 2.5 * eps / steps (Madry et al.'s choice: enough to
    cross the eps-ball from any start and then move along its surface).
    """

    eps: float = 8 / 255
    steps: int = 50
    step_size: float | None = None
    random_start: bool = True
    seed: int = 0
    attack: str = "pgd"
    storage: str = "uint8"

    def __post_init__(self) -> None:
        if not (0.0 <= self.eps <= 1.0) or self.eps != self.eps:
            raise ParameterError(f"--eps must be in [0, 1] (pixel scale; 8/255 = 0.0314), got {self.eps}")
        if self.steps <= 0:
            raise ParameterError(f"--steps must be a positive integer, got {self.steps}")
        if self.step_size is not None and not (0.0 < self.step_size <= 1.0):
            raise ParameterError(f"--step-size must be in (0, 1], got {self.step_size}")
        if self.attack not in ATTACKS:
            raise ParameterError(f"unknown attack '{self.attack}'; available: {', '.join(sorted(ATTACKS))}")
        from satkit.attacks.quantize import STORAGE_DTYPES

        if self.storage not in STORAGE_DTYPES:
            raise ParameterError(f"unknown storage dtype '{self.storage}'; use {', '.join(STORAGE_DTYPES)}")

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_size"] = self.alpha
        d["norm"] = "linf"
        d["loss"] = "cross_entropy(true label)"
        return d
