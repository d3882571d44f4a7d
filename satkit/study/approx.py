"""``satkit approx --study DIR``: one-sided SAT of a new model against a study's models, and its cluster.

The study directory is untrusted input (it may come from someone else): its
``study.json`` is checked field by field, its attack files are verified on read,
and the models it names are loaded like any model file, never with pickle allowed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from satkit import settings as S
from satkit.analysis.approx import (
    APPROX_SCHEMA,
    EXACT,
    ONE_SIDED,
    ApproxResult,
    EventFn,
    Outcomes,
    approx_explicit,
    approx_rows,
    assign_cluster,
    exact_rows,
    margin_interval,
)
from satkit.attacks import AttackParams
from satkit.data import DataRequest, default_eps
from satkit.errors import MismatchError, ParameterError
from satkit.io.atomic import check_outputs
from satkit.jobs import DEFAULT_BATCH_SIZE, AttackJob, attack_into_file, attack_is_current
from satkit.limits import K
from satkit.matrix.sat import sat_value
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
    one_sided: bool = False,
    on_event: EventFn | None = None,
) -> ApproxResult:
    """SAT of model ``new`` against every other model of a study, and the cluster it joins.

    Exact by default: where the study holds a current attack file of a known model B, N is also
    evaluated on B's adversarials, which gives the full SAT(N, B) (the row the study would have with N
    in it, without changing the study); elsewhere, and with ``one_sided``, the row is the paper's
    one-sided estimate (appendix G.1). The placement uses SAT when every row is exact, and its margin
    gets a bootstrap interval over images.

    The clean set and attack settings are the study's; the data must reproduce the
    study's fingerprint. If the study already holds a current attack file of
    ``new`` (a leave-one-out check), it is reused unless ``reuse_attack`` is False.
    ``model_options`` apply to the new model; the study's models load with ``known_options``,
    never with pickle allowed (a shared study directory must not run code).
    """
    st = read_settings(study_dir)
    if st.chunk_dirs:  # an adaptive study: N against each chunk's models, the counts summed (disjoint chunks)
        if save_attack_to is not None:
            raise ParameterError("save_attack_to keeps one attack file; an adaptive study attacks the new model once "
                                 "per chunk: run approx --study on one of its chunks/<k> to keep that chunk's file")
        parts = [_approx_rows(new, Path(study_dir) / "chunks" / f"{k:04d}", model_options=model_options,
                              known_options=known_options, batch_size=batch_size, device=device, amp=amp,
                              save_attack_to=None, reuse_attack=reuse_attack, one_sided=one_sided, on_event=on_event)
                 for k in range(st.chunk_dirs)]
        res = parts[0]
        summed = pl.concat([r.rows for r in parts]).group_by("model", maintain_order=True).agg(
            pl.col("n_both").sum(), pl.col("n_fooled").sum(), pl.col("n_fooled_new").sum(),
            (pl.col("kind") == EXACT).all().alias("exact"))
        res.rows = pl.DataFrame([{
            "model": r["model"], "cluster": None, "kind": EXACT if r["exact"] else ONE_SIDED,
            "n_both": r["n_both"], "n_fooled": r["n_fooled"], "fool_rate": r["n_fooled"] / r["n_both"] if r["n_both"] else None,
            "sat_approx": sat_value(r["n_fooled"], r["n_fooled"], r["n_both"], st.eps_s) if r["n_both"] else None,
            "n_fooled_new": r["n_fooled_new"] if r["exact"] else None,
            "sat": sat_value(r["n_fooled"], r["n_fooled_new"], r["n_both"], st.eps_s) if r["exact"] and r["n_both"] else None,
        } for r in summed.iter_rows(named=True)], schema=APPROX_SCHEMA)
        res.exact = bool(res.rows.height) and bool((res.rows["kind"] == EXACT).all())
        res.forward_samples_new = sum(r.forward_samples_new for r in parts)
        res.outcomes = {m: Outcomes(*(np.concatenate([getattr(r.outcomes[m], f) for r in parts])
                                      if all(getattr(r.outcomes.get(m), f, None) is not None for r in parts) else None
                                      for f in ("both", "fooled_known", "fooled_new")))
                        for m in res.outcomes if all(m in r.outcomes for r in parts)}
        res.attack_reused = all(r.attack_reused for r in parts)
        res.forward_samples = sum(r.forward_samples for r in parts)
        res.attack_forward_samples = sum(r.attack_forward_samples for r in parts)
        res.warnings = list(dict.fromkeys(w for r in parts for w in r.warnings))
    else:
        res = _approx_rows(new, study_dir, model_options=model_options, known_options=known_options,
                           batch_size=batch_size, device=device, amp=amp, save_attack_to=save_attack_to,
                           reuse_attack=reuse_attack, one_sided=one_sided, on_event=on_event)
    study = StudyDir(study_dir)
    sat_path = study.root / "sat.csv"
    if not sat_path.is_file():
        res.warnings.append(f"{sat_path} is missing: no cluster assignment (finish the study first)")
        return res
    names, sat = read_similarity_matrix(sat_path)
    keep = [i for i, n in enumerate(names) if n != res.model]
    assign_cluster(res, [names[i] for i in keep], sat[np.ix_(keep, keep)], k, seed, method=st.cluster_method)
    margin_interval(res, seed=seed)
    return res


def _approx_rows(new: str, study_dir: str | Path, *, model_options: ModelOptions | None, known_options: ModelOptions | None,
                 batch_size: int | str, device: Any, amp: str | None, save_attack_to: str | Path | None,
                 reuse_attack: bool, one_sided: bool, on_event: EventFn | None) -> ApproxResult:
    """The rows of :func:`approx_from_study` for one fixed study (or one chunk of an adaptive one): no clustering."""
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
    # a known model's attack file is read when it answers the study's request (the rule the study reuses files
    # by): its clean correctness, and for exact rows its adversarials; a missing or stale one leaves that row
    # one-sided, with a clean pass of the known model
    current = [m for m in known if attack_is_current(
        study.attack_path(m), name=model_display_name(m, known_options), weights_id=expected_weights_id(m, known_options),
        params=st.params, fingerprint=st.fingerprint, amp=amp) is not None]
    own_files = dict(zip(current, open_attack_files([str(study.attack_path(m)) for m in current]))) if current else {}
    warnings: list[str] = []
    stale = [m for m in known if m not in own_files]
    if stale:
        warnings.append(f"no current attack file in the study for {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}: "
                        "one-sided row(s) (finish the study to make them exact)")
    in_study = [m for m in st.models if model_display_name(m, known_options) == name]
    if in_study:
        warnings.append(f"{name} is part of the study: it is left out of the known models and of the clustering")
    emit = on_event or (lambda *a: None)

    with tempfile.TemporaryDirectory(prefix="satkit-approx-") as tmp:
        reused = None
        if reuse_attack and in_study:
            current = attack_is_current(study.attack_path(in_study[0]), name=name,
                                        weights_id=expected_weights_id(new, model_options), params=st.params,
                                        fingerprint=st.fingerprint, amp=amp)
            reused = open_attack_files([str(study.attack_path(in_study[0]))])[0] if current is not None else None
        if reused is not None:
            rh = reused.header
            new_file, stats, attack_fwd = reused, rh.stats.to_dict() if rh.stats is not None else {}, 0
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
        outcomes: dict[str, Outcomes] = {}
        rows, fwd, w = approx_rows(new_file, known, own_attacks=own_files, eps_s=st.eps_s, model_options=known_options,
                                   device=device, batch_size=batch_size, amp=amp, on_event=on_event, outcomes=outcomes)
        fwd_new = 0
        if not one_sided:
            by_name = {model_display_name(m, known_options): f for m, f in own_files.items()}
            rows, fwd_new, w2 = exact_rows(new, new_file, by_name, rows, eps_s=st.eps_s, outcomes=outcomes,
                                           model_options=model_options, device=device, batch_size=batch_size, amp=amp,
                                           on_event=on_event)
            w = w + w2
    return ApproxResult(model=name, rows=rows, eps_s=st.eps_s, attack_reused=reused is not None, attack_stats=stats,
                        forward_samples=fwd, attack_forward_samples=attack_fwd, warnings=warnings + w,
                        exact=bool(rows.height) and bool((rows["kind"] == EXACT).all()), forward_samples_new=fwd_new,
                        outcomes=outcomes)


@dataclass(frozen=True)
class ApproxRequest:
    """``satkit approx``: a new model against a study's models (``study``) or an explicit list (``models``).

    Without a study, each unset setting resolves like a study's (:mod:`satkit.settings`): data DATA, eps from
    the data source, STEPS, the SAT floor EPS_S; with a study, its recorded settings are used and giving
    any of those is an error (they could only disagree with the study).
    """

    model: str
    study: str | Path | None = None
    models: tuple[str, ...] = ()
    k: int | None = None  # clusters of the SAT matrix (None: eigengap)
    sat: str | None = None  # without a study: the known models' SAT matrix, for the cluster assignment
    known: str | None = None  # a known set instead of models (satkit.study.known: paper69)
    save_attack: str | Path | None = None
    reuse: bool = True  # a study's own current attack file of the new model is reused
    one_sided: bool = False  # with a study: the paper's G.1 estimate only, not the exact rows
    data: str | None = None
    n: int | None = None
    data_seed: int | None = None
    canvas: int | None = None
    labels: str | None = None
    eps: float | None = None
    steps: int | None = None
    eps_s: float | None = None
    seed: int = S.SEED  # k-means; without a study also the attack's random start
    batch_size: int | str | None = DEFAULT_BATCH_SIZE
    amp: str | None = None  # None: the study's, else AMP
    model_options: ModelOptions | None = None  # the new model's
    known_options: ModelOptions | None = None  # the known models' (never allowed to run code)

    def check(self) -> None:
        """The rules between fields, before any work (errors name fields; the CLI shows flags)."""
        if self.study is None and not self.models and self.known is None:
            raise ParameterError("models: give the known models (--models), a known set (--known paper69) or a study (--study DIR)")
        if self.known is not None:
            from satkit.study.known import KNOWN_SETS

            if self.known not in KNOWN_SETS:
                raise ParameterError(f"known: unknown known set '{self.known}'; one of {', '.join(KNOWN_SETS)}")
            if self.models or self.study is not None:
                raise ParameterError("known: a known set replaces models and study; give one of them")
            if self.data is None:
                raise ParameterError(f"data: the {self.known} models are ImageNet classifiers; give the ImageNet "
                                     "validation images (--data DIR, with --labels for a flat folder)")
        if self.study is not None:
            if self.models:
                raise ParameterError("models cannot be given with a study: the study's models are the known ones")
            given = [f for f in ("data", "n", "data_seed", "canvas", "labels", "eps", "steps", "eps_s", "sat")
                     if getattr(self, f) is not None]
            if given:
                raise ParameterError(f"{', '.join(given)}: a study's settings are used with a study; "
                                     f"drop {'it' if len(given) == 1 else 'them'}")
        K.check_optional(self.k)
        if self.k is not None and self.study is None and self.sat is None:
            raise ParameterError("k clusters a SAT matrix: give a study or sat")

    def data_request(self) -> DataRequest:
        return DataRequest(self.data or S.DATA, self.n, self.data_seed or S.DATA_SEED, self.canvas, self.labels)

    def inputs(self) -> list[Any]:
        """Every file the request reads (for "an output is never an input")."""
        new = self.model if Path(self.model).is_file() else None
        if self.study is not None:
            return [new, *approx_inputs(self.study)]
        return [new, self.sat, *DataRequest(self.data or S.DATA, labels=self.labels).inputs()]


def run_approx(req: ApproxRequest, *, device: Any = "cpu", on_event: EventFn | None = None) -> ApproxResult:
    """One call for ``satkit approx``: :func:`approx_from_study` or :func:`satkit.analysis.approx.approx_explicit`
    with every unset setting resolved (precedence: given > the study's > :mod:`satkit.settings`)."""
    req.check()
    kw = dict(model_options=req.model_options, known_options=req.known_options, k=req.k, seed=req.seed,
              batch_size=req.batch_size, device=device, save_attack_to=req.save_attack, on_event=on_event)
    if req.study is not None:
        return approx_from_study(req.model, req.study, amp=req.amp, reuse_attack=req.reuse, one_sided=req.one_sided, **kw)
    data = req.data_request()
    params = AttackParams(eps=req.eps if req.eps is not None else default_eps(data.source),
                          steps=req.steps if req.steps is not None else S.STEPS, seed=req.seed)
    if req.known is not None:
        from satkit.study.known import approx_known, read_release_matrix

        return approx_known(req.model, data, params, known=req.known,
                            sat=read_release_matrix(req.sat, req.known) if req.sat is not None else None,
                            eps_s=req.eps_s if req.eps_s is not None else S.EPS_S, amp=req.amp or S.AMP, **kw)
    sat = read_similarity_matrix(req.sat) if req.sat is not None else None
    return approx_explicit(req.model, list(req.models), data, params, eps_s=req.eps_s if req.eps_s is not None else S.EPS_S,
                           sat=sat, amp=req.amp or S.AMP, **kw)
