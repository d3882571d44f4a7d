"""``satkit approx --study DIR``: one-sided SAT of a new model against a study's models, and its cluster.

The study directory is untrusted input (it may come from someone else): its
``study.json`` is checked field by field, its attack files are verified on read,
and the models it names are loaded like any model file, never with pickle allowed.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from satkit.analysis.approx import ApproxResult, EventFn, approx_rows, assign_cluster
from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.io.atomic import check_outputs
from satkit.jobs import DEFAULT_BATCH_SIZE, AttackJob, attack_into_file, attack_is_current
from satkit.matrix.square import read_similarity_matrix
from satkit.models import ModelOptions, model_display_name
from satkit.models.registry import expected_weights_id
from satkit.study.layout import StudyDir, read_settings
from satkit.transfer import open_attack_files


def approx_inputs(study_dir: str | Path) -> list[Path]:
    """Every file ``approx_from_study`` reads (or may read) from ``study_dir``, for "an output is
    never an input": the study's own files and folders (a folder stands for every file in it) and
    the study's data (file or image folder, labels file). A missing or broken study reports it here."""
    st = read_settings(study_dir)
    return [*StudyDir(study_dir).files(), *st.data.inputs()]


def approx_from_study(
    new: str,
    study_dir: str | Path,
    *,
    model_options: ModelOptions | None = None,
    known_options: ModelOptions | None = None,
    k: int | None = None,
    seed: int = 0,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    device: Any = "cpu",
    amp: str | None = None,
    save_attack_to: str | Path | None = None,
    reuse_attack: bool = True,
    on_event: EventFn | None = None,
) -> ApproxResult:
    """Approximate SAT of model ``new`` against every other model of a study, and the cluster it joins.

    The clean set and attack settings are the study's; the data must reproduce the
    study's fingerprint. If the study already holds a current attack file of
    ``new`` (a leave-one-out check), it is reused unless ``reuse_attack`` is False.
    ``model_options`` apply to the new model; the study's models load with ``known_options``,
    never with pickle allowed (a shared study directory must not run code).
    """
    known_options = replace(known_options or ModelOptions(), allow_code=False)
    if save_attack_to is not None:  # before any work; the CLI checks all its outputs the same way
        check_outputs({"save_attack_to": save_attack_to}, [*approx_inputs(study_dir), new if Path(new).is_file() else None])
    st = read_settings(study_dir)
    study = StudyDir(study_dir)
    amp = amp or st.amp
    name = model_display_name(new, model_options)
    known = [m for m in st.models if model_display_name(m, known_options) != name]
    if not known:
        raise ParameterError(f"the study in {study.root} holds no model other than {name}; nothing to compare with")
    missing = [m for m in known if not study.attack_path(m).is_file()]
    if missing:
        raise InputFileError(f"{study.root}: attack files missing for {', '.join(missing[:5])}; "
                             f"rerun `satkit study -o {study.root}` to finish it")
    own_files = open_attack_files([str(study.attack_path(m)) for m in known])
    for f in own_files:
        if f.provenance["data"]["fingerprint"] != st.fingerprint:
            raise MismatchError(f"{f.path} was made from another clean set than {study.settings_path} says; rerun satkit study")
    warnings: list[str] = []
    in_study = [m for m in st.models if model_display_name(m, known_options) == name]
    if in_study:
        warnings.append(f"{name} is part of the study: it is left out of the known models and of the clustering")
    emit = on_event or (lambda *a: None)

    with tempfile.TemporaryDirectory(prefix="satkit-approx-") as tmp:
        reused = None
        if reuse_attack and in_study:
            prov = attack_is_current(study.attack_path(in_study[0]), name=name,
                                     weights_id=expected_weights_id(new, model_options), params=st.params,
                                     fingerprint=st.fingerprint, amp=amp)
            reused = open_attack_files([str(study.attack_path(in_study[0]))])[0] if prov is not None else None
        if reused is not None:
            new_file, stats, attack_fwd = reused, reused.provenance.get("stats", {}), 0
        else:
            clean = st.data.load()
            if clean.fingerprint != st.fingerprint:
                raise MismatchError(
                    f"--data {st.data.source} no longer gives the study's clean set (fingerprint {clean.fingerprint[:8]} "
                    f"vs {st.fingerprint[:8]}); the data changed since the study was made"
                )
            path = Path(save_attack_to) if save_attack_to is not None else Path(tmp) / "new.safetensors"
            job = AttackJob(new, data=st.data, params=st.params, model_options=model_options, batch_size=batch_size, amp=amp)
            a = attack_into_file(job, path, device=device, clean=clean, progress=lambda d, t: emit("attack", name, d, t))
            new_file, stats, attack_fwd = open_attack_files([str(path)])[0], a.stats, a.forward_samples
        rows, fwd, w = approx_rows(new_file, known, own_attacks=dict(zip(known, own_files)), eps_s=st.eps_s,
                                   model_options=known_options, device=device, batch_size=batch_size, amp=amp, on_event=on_event)
    res = ApproxResult(model=name, rows=rows, eps_s=st.eps_s, attack_reused=reused is not None, attack_stats=stats,
                       forward_samples=fwd, attack_forward_samples=attack_fwd, warnings=warnings + w)
    sat_path = study.root / "sat.csv"
    if not sat_path.is_file():
        res.warnings.append(f"{sat_path} is missing: no cluster assignment (finish the study first)")
        return res
    names, S = read_similarity_matrix(sat_path)
    keep = [i for i, n in enumerate(names) if n != name]
    assign_cluster(res, [names[i] for i in keep], S[np.ix_(keep, keep)], k, seed, method=st.cluster_method)
    return res
