"""Every default setting, defined once, and the table that names each setting on the command line.

One source per fact: the library's request objects (:class:`satkit.study.StudyConfig`,
:class:`satkit.attacks.AttackParams`, the approx and matrix calls), the CLI's option
defaults, ``study.json`` and the report's "how to rerun" command all read the values
below. A test greps the package to keep each one defined here only.

How a setting gets its value, highest precedence first (as timm's ``resolve_data_config``):

1. the value the caller gives (a CLI option, a keyword argument);
2. the study's recorded value (``study.json``: ``approx --study``, a rerun);
3. a default that follows from another setting: ``eps`` from the data source
   (:func:`satkit.data.default_eps`: DIGITS_EPS or NATURAL_EPS), the step size from the attack's rule (PGD: :func:`madry_step`);
4. the constant below.

Library errors name settings by their field name (``eps must be ...``); the CLI shows
the option instead (``--eps must be ...``) through :data:`FLAGS`, the one field -> flag table.
Torch-free and import-free on purpose: the CLI builds its options from here before importing torch.
"""

from __future__ import annotations

# ---- the measure -----------------------------------------------------------------------------
EPS_S = 1.0  # SAT floor, percent: SAT = ln(max(eps_s, transfer %)); 1 keeps SAT in [0, ln 100 = 4.605]

# ---- the attack (the paper: PGD, L-infinity, 50 iterations) ------------------------------------
ATTACK = "pgd"  # satkit.attacks registry name
STEPS = 50  # iterations (paper: 50 PGD steps)
# L-inf budget, pixel scale, on the built-in digits: chosen from a measured sweep (docs/study.md): every zoo
# model's own attack succeeds on >= 90 % of samples and same-architecture pairs score above cross-architecture ones
DIGITS_EPS = 0.1
NATURAL_EPS = 8 / 255  # L-inf budget, pixel scale, on natural images (the paper's ImageNet budget)
SEED = 0  # attack random start and per-sample noise
STORAGE = "uint8"  # dtype of stored clean/adversarial images
MADRY_STEP_RULE = "2.5*eps/steps"  # PGD's step (Madry et al.): crosses the eps-ball, then moves along its surface


def madry_step(eps: float, steps: int) -> float:
    """The default step size of PGD and LF-PGD: :data:`MADRY_STEP_RULE`."""
    return 2.5 * eps / steps


# ---- the study ---------------------------------------------------------------------------------
STUDY_DIR = "satkit-study"  # default output directory of `satkit study`
DATA = "digits"  # default data source
DATA_SEED = 0  # seed of the --n sample
ZOO_SET = "default"  # the digits zoo set a study compares when no model is named
AMP = "off"  # autocast: off | bf16 | fp16
CLUSTER_METHOD = "paper"  # spectral clustering: paper (the paper's procedure) | njw (rows normalized)
N_BOOT = 1000  # bootstrap resamples of confidence intervals
CI_LEVEL = 0.95  # interval level an adaptive study bounds when no --ci is given
CHUNK = 100  # images an adaptive study adds per step


# ---- field name -> command-line option (errors, help, the rerun command) -----------------------
FLAGS = {
    "models": "MODELS", "zoo_set": "--zoo", "out": "-o", "data": "--data", "n": "--n", "data_seed": "--data-seed",
    "canvas": "--canvas", "labels": "--labels", "attack": "--attack", "eps": "--eps", "steps": "--steps",
    "step_size": "--step-size", "seed": "--seed", "storage": "--storage", "attack_all": "--attack-all",
    "eps_s": "--eps-s", "batch_size": "--batch-size", "amp": "--amp", "compile": "--compile",
    "per_sample": "--per-sample", "ci": "--ci", "n_boot": "--n-boot", "analyses": "--analyses", "k": "-k",
    "cluster_method": "--cluster-method", "precision": "--precision", "chunk": "--chunk", "shard": "--shard",
    "devices": "--devices", "ray": "--ray", "plan": "--plan", "pretrained": "--pretrained",
    "study": "--study", "sat": "--sat", "save_attack": "--save-attack", "save_attack_to": "--save-attack",
    "decay": "--decay", "samples": "--vmi-samples", "beta": "--vmi-beta", "rho": "--rho", "band": "--band",
}


def flag(field: str) -> str:
    """The option that sets ``field`` (the field name itself when it has none)."""
    return FLAGS.get(field, field)


def flag_message(message: str) -> str:
    """A library message that starts with a field name ("eps must be ...") as the CLI says it ("--eps must be ...")."""
    head, sep, rest = message.partition(" ")
    name = head.rstrip(":,")
    if name in FLAGS and FLAGS[name].startswith("-"):
        return FLAGS[name] + head[len(name):] + sep + rest
    return message


# ---- the "how to rerun" command of a study ----------------------------------------------------
# study.json field -> how `satkit study` takes it, in the order the command line shows them.
# "value": the flag and the value, when the value differs from the default ("always": every time);
# "switch": a boolean flag (--x/--no-x), given when the value differs from the default.
STUDY_OPTIONS: tuple[tuple[str, str, object], ...] = (
    ("data", "always", None), ("n", "value", None), ("data_seed", "value", DATA_SEED), ("canvas", "value", None),
    ("labels", "value", None), ("attack", "value", ATTACK), ("eps", "always", None), ("steps", "always", None),
    ("step_size", "value", None), ("attack_options", "options", None), ("attack_all", "switch", False),
    ("seed", "value", SEED), ("storage", "value", STORAGE), ("eps_s", "value", EPS_S), ("amp", "value", AMP),
    ("batch_size", "value", None), ("per_sample", "switch", True), ("ci", "value", None), ("n_boot", "value", N_BOOT),
    ("analyses", "switch", True), ("k", "value", None), ("cluster_method", "value", CLUSTER_METHOD),
    ("precision", "value", None), ("chunk", "value", CHUNK), ("pretrained", "switch", True),
)
SWITCH_OFF = {"per_sample": "--no-per-sample", "analyses": "--no-analyses", "pretrained": "--random-init"}


def study_argv(values: dict[str, object], option_flags: dict[str, str] | None = None) -> list[str]:
    """The options of ``satkit study`` that reproduce ``values`` (field -> value, already rendered as text
    where it matters: eps as 8/255, floats by repr), from :data:`STUDY_OPTIONS`. ``values["attack_options"]``
    holds (name, value) pairs whose flags are ``option_flags`` (the attack registry's)."""
    argv: list[str] = []
    for field, how, default in STUDY_OPTIONS:
        v = values.get(field, default)
        if how == "options":
            for name, value in v or ():
                argv += [(option_flags or {}).get(name, flag(name)), repr(value)]
        elif how == "switch":
            if v != default:
                argv.append(flag(field) if v else SWITCH_OFF.get(field, f"--no-{flag(field).lstrip('-')}"))
        elif v is not None and (how == "always" or v != default):
            argv += [flag(field), v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)]
    return argv
