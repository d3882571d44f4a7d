"""``satkit study --plan``: what a study will cost, asked with the same "is it current" rules as the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satkit.errors import SatkitError
from satkit.jobs import attack_is_current
from satkit.models.registry import expected_weights_id
from satkit.study.config import StudyConfig
from satkit.study.tasks import open_study_attacks, study_data, transfer_state


def attacks_done(cfg: StudyConfig, fingerprint: str) -> dict[str, dict[str, Any]]:
    """spec -> provenance of each model whose stored attack file is current (:func:`satkit.jobs.attack_is_current`)."""
    done = {}
    for spec in cfg.models:
        prov = attack_is_current(cfg.dir.attack_path(spec), name=cfg.name(spec),
                                 weights_id=expected_weights_id(spec, cfg.model_options), params=cfg.params,
                                 fingerprint=fingerprint, amp=cfg.amp)
        if prov is not None:
            done[spec] = prov
    return done


@dataclass
class StudyPlan:
    """What a study will cost, before anything runs."""

    models: int
    samples: int
    steps: int
    attacks: int  # attack jobs still to run
    attacks_done: int
    transfer_evaluations: int  # (source, target) pairs still to evaluate
    transfer_done: int
    attack_forward_backward: int  # attack passes: samples * gradients per sample, per attack (at most: see attack_all)
    attack_forward: int  # clean + stored-adversarial check: 2 * samples per attack (at most)
    transfer_forward_max: int  # adversarial forwards; the real count is sum |X_AB| <= samples per pair
    model_loads: int
    attack: str = "pgd"
    attack_all: bool = False  # False: only samples the source classifies correctly are attacked

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("models", f"{self.models}"),
            ("samples", f"{self.samples}"),
            ("attacks to run", f"{self.attacks} ({self.attacks_done} already done)"),
            ("transfer evaluations to run", f"{self.transfer_evaluations} ({self.transfer_done} already done)"),
            (f"{self.attack} forward+backward passes (images{'' if self.attack_all else ', at most'})",
             f"{self.attack_forward_backward:,}" + ("" if self.attack_all else " (misclassified samples are not attacked)")),
            (f"attack forward passes (images{'' if self.attack_all else ', at most'})", f"{self.attack_forward:,}"),
            ("transfer forward passes (images, at most)", f"{self.transfer_forward_max:,}"),
            ("model loads", f"{self.model_loads}"),
        ]


def plan_study(cfg: StudyConfig) -> StudyPlan:
    """Count the work :func:`satkit.study.run_study` would do on ``cfg``, minus what its directory already holds.

    The clean set is loaded (image folders are decoded) to know its fingerprint:
    the plan and the run answer "is this file current" with the same rule.
    """
    clean = study_data(cfg)
    samples = len(clean)
    done = attacks_done(cfg, clean.fingerprint) if cfg.dir.root.is_dir() else {}
    pairs_done = 0
    if done:
        try:
            files_by_key = open_study_attacks(cfg, [m for m in cfg.models if m in done], verify=False)
        except SatkitError:
            files_by_key = {}
        for spec in cfg.models:
            st = transfer_state(cfg, spec, files_by_key)
            pairs_done += len(files_by_key) - len(st.todo)
    todo_attacks = len(cfg.models) - len(done)
    todo_pairs = len(cfg.models) ** 2 - pairs_done
    return StudyPlan(
        models=len(cfg.models), samples=samples, steps=cfg.params.steps,
        attacks=todo_attacks, attacks_done=len(done),
        transfer_evaluations=todo_pairs, transfer_done=pairs_done,
        attack_forward_backward=todo_attacks * samples * cfg.params.gradients_per_sample,
        attack_forward=todo_attacks * samples * 2,
        transfer_forward_max=todo_pairs * samples,
        model_loads=todo_attacks + (len(cfg.models) if todo_pairs else 0),
        attack=cfg.params.attack, attack_all=cfg.params.attack_all,
    )
