"""Attack parameters and the attack registry.

Every attack is L-infinity, untargeted, on [0, 1] pixels, and is one function

    fn(model, x, y, *, eps, steps, alpha, init, amp_dtype, noise, **options) -> adv (float32)

registered with :func:`register_attack`. ``init`` is the random start made by the
runner (seeded per sample) or None; ``noise`` is a :class:`satkit.attacks.noise.SampleNoise`
for attacks that draw random numbers inside the loop (seeded per sample too, so a
file does not depend on batch size, shard or device). Attack-specific settings are
declared as :class:`AttackOption` and validated here, once, for every command.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from satkit.errors import ParameterError
from satkit.limits import STEPS
from satkit.settings import ATTACK, NATURAL_EPS, SEED, STORAGE
from satkit.settings import STEPS as DEFAULT_STEPS


@dataclass(frozen=True)
class AttackOption:
    """One attack-specific setting: ``name`` is the keyword the attack function takes, ``flag`` the CLI option."""

    name: str
    flag: str
    default: float | int
    help: str
    low: float = -math.inf  # inclusive bounds
    high: float = math.inf
    integer: bool = False

    def coerce(self, attack: str, value: Any) -> float | int:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{self.flag} must be a number, got {value!r}") from None
        if self.integer:
            if v != int(v):
                raise ParameterError(f"{self.flag} must be an integer, got {value!r}")
            v = int(v)
        if not (self.low <= v <= self.high):
            raise ParameterError(f"{self.flag} ({attack}) must be in [{self.low:g}, {self.high:g}], got {value!r}")
        return v


@dataclass(frozen=True)
class AttackSpec:
    name: str
    fn: Callable[..., Any]
    summary: str  # one line for --help and docs
    reference: str
    step_rule: str  # how the default step size follows from eps and steps, in words
    default_step: Callable[[float, int], float]
    random_start: bool  # the published default
    options: tuple[AttackOption, ...] = ()
    loss: str = "cross_entropy(true label)"
    # forward + backward passes per sample, from (steps, options): the cost --plan reports
    gradients: Callable[[int, dict], int] = lambda steps, options: steps


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name: str, *, summary: str, reference: str, step_rule: str,
                    default_step: Callable[[float, int], float], random_start: bool,
                    options: tuple[AttackOption, ...] = (), gradients: Callable[[int, dict], int] | None = None):
    def deco(fn):
        ATTACKS[name] = AttackSpec(name, fn, summary, reference, step_rule, default_step, random_start, options,
                                   gradients=gradients or (lambda steps, options: steps))
        return fn

    return deco


def attack_spec(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise ParameterError(f"unknown attack '{name}'; available: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


def option_flags() -> dict[str, list[str]]:
    """Each CLI flag of an attack option -> the attacks that take it."""
    out: dict[str, list[str]] = {}
    for spec in ATTACKS.values():
        for o in spec.options:
            out.setdefault(o.flag, []).append(spec.name)
    return out


@dataclass(frozen=True)
class AttackParams:
    """Attack settings. ``eps`` and ``step_size`` are in pixel scale ([0, 1]).

    ``step_size=None`` means the attack's default rule (PGD: satkit.settings.madry_step, 2.5 eps/steps,
    Madry et al.'s choice: enough to cross the eps-ball from any start and then move
    along its surface). ``random_start=None`` means the attack's published default.
    ``options`` holds the attack-specific settings; missing ones take their
    defaults, so two params that mean the same attack compare equal.
    """

    eps: float = NATURAL_EPS  # defaults: satkit.settings (the CLI and the study take eps from the data source)
    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    random_start: bool | None = None
    seed: int = SEED
    attack: str = ATTACK
    storage: str = STORAGE
    options: Any = field(default=())  # a mapping or (name, value) pairs; stored as sorted pairs
    # False: only the samples the source classifies correctly are attacked (the only ones SAT reads)
    attack_all: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.eps <= 1.0) or self.eps != self.eps:
            raise ParameterError(f"eps must be in [0, 1] (pixel scale; 8/255 = 0.0314), got {self.eps}")
        STEPS.check(self.steps)
        if self.step_size is not None and not (0.0 < self.step_size <= 1.0):
            raise ParameterError(f"step_size must be in (0, 1], got {self.step_size}")
        spec = attack_spec(self.attack)
        from satkit.io.pixels import STORAGE_DTYPES

        if self.storage not in STORAGE_DTYPES:
            raise ParameterError(f"unknown storage dtype '{self.storage}'; use {', '.join(STORAGE_DTYPES)}")
        if self.random_start is None:
            object.__setattr__(self, "random_start", spec.random_start)
        given = dict(self.options.items() if isinstance(self.options, Mapping) else self.options)
        known = {o.name: o for o in spec.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            flags = {o.name: o.flag for s in ATTACKS.values() for o in s.options}
            names = ", ".join(flags.get(k, k) for k in unknown)
            takes = ", ".join(o.flag for o in spec.options) or "none"
            raise ParameterError(f"{names} does not apply to --attack {self.attack} (its options: {takes})")
        resolved = tuple(sorted((k, o.coerce(self.attack, given.get(k, o.default))) for k, o in known.items()))
        object.__setattr__(self, "options", resolved)

    @property
    def spec(self) -> AttackSpec:
        return ATTACKS[self.attack]

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.spec.default_step(self.eps, self.steps)

    @property
    def option_values(self) -> dict[str, float | int]:
        return dict(self.options)

    @property
    def gradients_per_sample(self) -> int:
        """Forward + backward passes the attack spends on one sample."""
        return self.spec.gradients(self.steps, self.option_values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_size"] = self.alpha
        d["norm"] = "linf"
        d["loss"] = self.spec.loss
        if self.options:
            d["options"] = dict(self.options)
        else:
            del d["options"]  # PGD's dict (and so every PGD attack key) is unchanged by the registry
        if not self.attack_all:
            # absent when False: files made before the skip (every sample attacked) keep their keys and
            # answer today's requests, as the samples SAT reads were attacked the same way
            del d["attack_all"]
        return d

    @classmethod
    def from_dict(cls, a: Mapping[str, Any]) -> "AttackParams":
        """The params a ``to_dict`` came from (KeyError/TypeError/ValueError if a field is missing or mistyped)."""
        opts = a.get("options", {})
        if not isinstance(opts, Mapping):
            raise TypeError("attack options must be a mapping")
        if not isinstance(a["random_start"], bool) or not isinstance(a.get("attack_all", False), bool):
            raise TypeError("random_start and attack_all must be booleans")
        return cls(eps=float(a["eps"]), steps=int(a["steps"]), step_size=float(a["step_size"]),
                   random_start=a["random_start"], seed=int(a["seed"]), attack=str(a.get("attack", ATTACK)),
                   storage=str(a["storage"]), options=dict(opts), attack_all=a.get("attack_all", False))
