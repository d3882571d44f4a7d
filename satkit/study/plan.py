"""``satkit study --plan``: what a study will cost, asked with the same "is it current" rules as the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satkit import settings as S
from satkit.errors import SatkitError
from satkit.jobs import attack_is_current
from satkit.models.registry import expected_weights_id
from satkit.study.config import StudyConfig
from satkit.study.tasks import open_study_attacks, study_data, transfer_state


def attacks_done(cfg: StudyConfig, fingerprint: str) -> dict[str, dict[str, Any]]:
    """spec -> provenance of each model whose stored attack file is current (:func:`satkit.jobs.attack_is_current`)."""
    done = {}
    for spec in cfg.models:
        header = attack_is_current(cfg.dir.attack_path(spec), name=cfg.name(spec),
                                   weights_id=expected_weights_id(spec, cfg.model_options), params=cfg.params,
                                   fingerprint=fingerprint, amp=cfg.amp)
        if header is not None:
            done[spec] = header.to_dict()  # as a dict: study/run.py reads its stats from it
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
    attack: str = S.ATTACK
    attack_all: bool = False  # False: only samples the source classifies correctly are attacked
    chunks: str = ""  # adaptive sampling: how many chunks, and what the counts above cover

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("models", f"{self.models}"),
            *([("sampling", self.chunks)] if self.chunks else []),
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
    the plan and the run answer "is this file current" with the same rule. An adaptive
    study (``precision``) is planned as the sum of its chunk studies: the most it can cost,
    as it stops at the first chunk whose intervals are narrow enough.
    """
    if cfg.precision is not None:
        return _plan_adaptive(cfg)
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


def _plan_adaptive(cfg: StudyConfig) -> StudyPlan:
    from satkit.study.adaptive import chunk_cfg, chunk_count

    available, n_chunks = chunk_count(cfg)
    plans = [plan_study(chunk_cfg(cfg, k)) for k in range(n_chunks)]
    done = sum(1 for p in plans if p.attacks == 0 and p.transfer_evaluations == 0)
    total = StudyPlan(models=len(cfg.models), samples=available, steps=cfg.params.steps, attacks=0, attacks_done=0,
                      transfer_evaluations=0, transfer_done=0, attack_forward_backward=0, attack_forward=0,
                      transfer_forward_max=0, model_loads=0, attack=cfg.params.attack, attack_all=cfg.params.attack_all)
    for p in plans:
        for f in ("attacks", "attacks_done", "transfer_evaluations", "transfer_done", "attack_forward_backward",
                  "attack_forward", "transfer_forward_max", "model_loads"):
            setattr(total, f, getattr(total, f) + getattr(p, f))
    total.chunks = (f"adaptive: chunks of {cfg.chunk} images until every half-width <= {cfg.precision:g}; "
                    f"{n_chunks} chunk(s) at most ({done} done); the counts below are for all of them")
    return total
