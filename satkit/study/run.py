"""``satkit study``: one pipeline, a sampling plan then one finish.

    sampling  fixed: (zoo training) -> attack each model -> transfer all -> the matrix of the sample
              adaptive (``precision``): the same, chunk by chunk (each chunk a study in chunks/<k>/),
              until every interval is narrow enough -> the matrix of the union (:mod:`satkit.study.adaptive`)
    finish    sat.csv, sat_long.csv, same_class.csv -> analyses -> heatmaps, models.csv -> study.json -> report.html

Progress is one protocol, :class:`StudyEvent`, for both plans. A study is two waves of idempotent jobs (:mod:`satkit.study.tasks`): one attack per
model, then one transfer job per target; executors decide where they run.
Work whose output is current is skipped, so a rerun (or a run after a crash or a
kill) resumes, and adding one model to a finished N-model study costs one attack
plus 2N+1 transfer evaluations (the new source on N old targets, N old sources
plus itself on the new target).

``shard=(i, n)`` splits the work for job arrays: shard i attacks, and evaluates as
a target, every n-th model starting at i. A shard stops (``result.waiting``) when
it needs outputs of other shards; running every shard twice completes the study,
and any shard's last run writes the matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from satkit.errors import OutputError, ParameterError, SatkitError
from satkit.io.lock import DirectoryLock
from satkit.io.tables import read_table, write_table
from satkit.matrix.sat import SatMatrix, bootstrap_ci, build_matrix
from satkit.study.analyses import StudyAnalysis, run_analyses, write_heatmaps, write_logits, write_model_summary
from satkit.study.config import StudyConfig
from satkit.study.layout import StudyDir, StudySettings, write_settings
from satkit.study.plan import attacks_done
from satkit.study.tasks import JobReport, attack_job, open_study_attacks, study_data, transfer_job, transfer_state


@dataclass
class StudyEvent:
    """What the study tells its progress callback: a stage, a model, and done/total in the stage's unit."""

    stage: str  # zoo | data | attack | transfer | matrix | analysis | precision (adaptive: after each chunk)
    model: str  # precision: the chunk directory
    done: int  # precision: images used so far
    total: int  # precision: images available
    skipped: bool = False
    chunk: int | None = None  # adaptive: the chunk the event belongs to
    value: float | None = None  # precision: the widest interval half-width so far (inf: none yet)


@dataclass
class StudyResult:
    out_dir: Path
    matrix: SatMatrix | None = None
    attacks_run: int = 0
    attacks_skipped: int = 0
    transfer_evaluations: int = 0  # (source, target) pairs evaluated in this run
    transfer_skipped: int = 0
    model_loads: int = 0
    forward_samples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    attack_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    analysis: StudyAnalysis | None = None
    waiting: list[str] = field(default_factory=list)  # with a shard: outputs other shards have not made yet
    jobs: list[JobReport] = field(default_factory=list)  # what each job that was dispatched did
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    report: Path | None = None  # report.html, once written
    adaptive: dict[str, Any] | None = None  # adaptive sampling: chunks, images, stop reason, history (study.json)
    chunk_results: list["StudyResult"] = field(default_factory=list)  # adaptive: each chunk study's result

    def add(self, rep: JobReport) -> None:
        self.model_loads += rep.model_loads
        self.forward_samples += rep.forward_samples
        self.jobs.append(rep)
        if rep.kind == "attack":
            self.attack_stats[rep.name] = rep.stats
            if rep.ran:
                self.attacks_run += 1
            else:
                self.attacks_skipped += 1
        else:
            self.transfer_evaluations += rep.evaluations
            self.transfer_skipped += rep.reused


def shard_share(models: list[str] | tuple[str, ...], shard: tuple[int, int] | None) -> list[str]:
    """The models shard ``i`` of ``n`` attacks and evaluates as a target: every n-th, starting at i (0-based)."""
    if shard is None:
        return list(models)
    i, n = shard
    if n <= 0 or not 0 <= i < n:
        raise ParameterError(f"shard {i}/{n}: need 0 <= i < n (shards are numbered from 0, e.g. 0/4 .. 3/4)")
    return [m for j, m in enumerate(models) if j % n == i]


def run_study(
    cfg: StudyConfig,
    *,
    device: Any = "cpu",
    executor: Any = None,
    shard: tuple[int, int] | None = None,
    wait_for_lock: bool = False,
    on_wait: Callable[[str], None] | None = None,
    on_event: Callable[[StudyEvent], None] | None = None,
) -> StudyResult:
    """Run (or resume) the study ``cfg`` describes; ``executor`` decides where jobs run (default: here, on ``device``).

    One run at a time holds the directory (a second one stops, or waits with ``wait_for_lock``);
    the shards of a job array share it by design, each writing only its own files.
    """
    cfg.validate()
    shard_share(cfg.models, shard)  # a bad shard is refused before any work
    study = cfg.dir
    emit = on_event or (lambda e: None)
    check_study_outputs(cfg)
    try:
        for d in study.subdirs() if cfg.precision is None else [study.root]:  # adaptive: the chunks hold the jobs
            d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create study directory {study.root}: {e.strerror}") from None
    res = StudyResult(out_dir=study.root)
    lock = DirectoryLock(study.root, wait=wait_for_lock, on_wait=on_wait) if shard is None else _NoLock()
    with lock:
        study.remove_stale_partials()
        if cfg.precision is None:
            sample = _sample(cfg, res, device, executor, shard, emit)
        else:
            from satkit.study.adaptive import sample_adaptive

            def run_chunk(c: StudyConfig, k: int) -> StudyResult:
                return run_study(c, device=device, executor=executor, shard=shard, wait_for_lock=wait_for_lock,
                                 on_wait=on_wait, on_event=lambda e: emit(replace(e, chunk=k)))

            sample = sample_adaptive(cfg, res, run_chunk, emit)
        if sample is not None:  # None: a shard waits for other shards' outputs
            finish(cfg, res, *sample, emit)
    return res


def _sample(cfg: StudyConfig, res: StudyResult, device: Any, executor: Any, shard: tuple[int, int] | None,
            emit: Callable[[StudyEvent], None]) -> tuple[SatMatrix, str, None] | None:
    """The fixed plan: attack and transfer waves over the whole sample, then its matrix; None while waiting for shards."""
    from satkit.study.executors import LocalExecutor

    study = cfg.dir
    mine = set(shard_share(cfg.models, shard))
    t0 = time.perf_counter()
    _ensure_zoo(cfg.models, emit)
    res.seconds["zoo"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clean = study_data(cfg)
    emit(StudyEvent("data", cfg.data.source, len(clean), len(clean)))
    res.seconds["data"] = time.perf_counter() - t0
    executor = executor or LocalExecutor(device, clean)

    def job_progress(stage: str, spec: str, done: int, total: int) -> None:
        emit(StudyEvent(stage, spec, done, total))

    # wave 1: attacks (a job skips a current file itself; asking first keeps skipped ones off the executor)
    t0 = time.perf_counter()
    done = attacks_done(cfg, clean.fingerprint)
    to_attack = []
    for spec in cfg.models:
        if spec in done:
            res.attacks_skipped += 1
            res.attack_stats[cfg.name(spec)] = done[spec].get("stats", {})
            emit(StudyEvent("attack", spec, len(clean), len(clean), skipped=True))
        elif spec in mine:
            to_attack.append(spec)
        else:
            res.waiting.append(f"attack of {spec}")
    for rep in executor.run(attack_job, cfg, to_attack, "attack", job_progress):
        res.add(rep)
    res.seconds["attack"] = time.perf_counter() - t0
    if res.waiting:
        return None

    write_logits(study, list(cfg.models))

    # wave 2: transfers, one job per target
    t0 = time.perf_counter()
    files_by_key = open_study_attacks(cfg, verify=False)  # keys only: each transfer job verifies what it reads
    to_eval = []
    for spec in cfg.models:
        if not transfer_state(cfg, spec, files_by_key).todo:
            res.transfer_skipped += len(files_by_key)
            emit(StudyEvent("transfer", spec, len(files_by_key), len(files_by_key), skipped=True))
        elif spec in mine:
            to_eval.append(spec)
        else:
            res.waiting.append(f"transfers to {spec}")
    for rep in executor.run(transfer_job, cfg, to_eval, "transfer", job_progress):
        res.add(rep)
    res.seconds["transfer"] = time.perf_counter() - t0
    if res.waiting:
        return None

    t0 = time.perf_counter()
    mat = _matrix(cfg)
    res.seconds["matrix"] = time.perf_counter() - t0
    return mat, clean.fingerprint, None


def finish(cfg: StudyConfig, res: StudyResult, mat: SatMatrix, fingerprint: str, adaptive: dict[str, Any] | None,
           emit: Callable[[StudyEvent], None]) -> None:
    """The one finish of every study, whatever its sampling plan: the matrix files, the analyses, the
    heatmaps and models.csv, ``study.json`` (written last but the report: it always describes a finished
    matrix, ``approx --study`` relies on it), then report.html."""
    study = cfg.dir
    res.matrix, res.adaptive = mat, adaptive
    t0 = time.perf_counter()
    write_table(mat.frame(), study.root / "sat.csv")
    write_table(mat.long, study.root / "sat_long.csv")
    if mat.same_class is not None:
        write_table(mat.frame(mat.same_class), study.root / "same_class.csv")
    emit(StudyEvent("matrix", "sat.csv", 1, 1))
    res.seconds["matrix"] = res.seconds.get("matrix", 0.0) + time.perf_counter() - t0
    if cfg.analyses and len(mat.names) >= 3 and not np.isnan(mat.values).any():
        t0 = time.perf_counter()
        try:
            res.analysis = run_analyses(mat, study, k=cfg.k, seed=cfg.params.seed, method=cfg.cluster_method,
                                        emit=lambda what, d, t: emit(StudyEvent("analysis", what, d, t)))
        except SatkitError as e:  # e.g. a matrix without structure cannot be clustered; the matrix stands
            res.notes.append(f"analyses skipped: {e}")
        if res.analysis is not None:
            res.notes += res.analysis.skipped
        res.seconds["analysis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clusters = res.analysis.clusters if res.analysis is not None else None
    write_heatmaps(mat, study, clusters)
    # the per-model summary reads each model's attack file: an adaptive study's are in its first chunk
    write_model_summary(study, list(cfg.models), clusters,
                        attacks=StudyDir(study.root / "chunks" / "0000") if adaptive is not None else None)
    write_settings(study, StudySettings.of(cfg, fingerprint, adaptive))
    res.report = _report(study, res.notes)
    res.seconds["report"] = time.perf_counter() - t0


def check_study_outputs(cfg: StudyConfig) -> None:
    """Before any work: no symbolic link inside the study directory (writes and deletions would
    go through it), and the study is none of its own inputs (the data file or image folder,
    a labels file, a model file): :func:`satkit.io.atomic.check_not_input` for the directory
    and each of its files."""
    from satkit.io.atomic import check_not_input, in_tree, split_inputs
    from satkit.study.layout import SUBDIRS

    study = cfg.dir
    study.check_no_links()
    files, trees = split_inputs([*cfg.data.inputs(), *(m for m in cfg.models if Path(m).is_file())])
    if not files and not trees:
        return
    check_not_input("-o", study.root, [], trees)
    for p in study.files():
        if p.name in SUBDIRS:  # a folder the study fills: no input file in it
            hit = next((f for f in files if in_tree(f, p)), None)
            if hit is not None:
                raise OutputError(f"-o {study.root}: {hit[0]} is an input of this run inside the study's {p.name}/ folder; "
                                  "satkit never writes over its inputs: move it or choose another output directory")
        else:
            check_not_input("-o", p, files, [])


def _report(study, notes: list[str]) -> Path | None:
    """report.html from the finished directory; a report that cannot be made is a note, the study stands."""
    from satkit.study.report import write_report

    try:
        return write_report(study.root, study.root / "report.html")
    except SatkitError as e:
        notes.append(f"report.html not written: {e}")
        return None


def _matrix(cfg: StudyConfig) -> SatMatrix:
    """The matrix of the study's transfer tables, with its intervals when ``ci`` is asked for (written by :func:`finish`)."""
    study = cfg.dir
    tables = [read_table(study.transfer_path(m), "transfer table") for m in cfg.models]
    mat = build_matrix(tables, eps_s=cfg.eps_s)
    if cfg.ci is not None:
        samples = pl.concat([read_table(study.samples_path(m), "per-sample table") for m in cfg.models], how="diagonal_relaxed")
        ci = bootstrap_ci(samples, mat.names, eps_s=cfg.eps_s, level=cfg.ci, n_boot=cfg.n_boot, seed=cfg.params.seed,
                          matrix=mat)
        mat.long = mat.long.join(ci, on=["a", "b"], how="left")
    return mat


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _ensure_zoo(models, emit) -> None:
    from satkit.models import zoo

    missing = [m.removeprefix("digits/") for m in models if m.startswith("digits/")
               and m.removeprefix("digits/") in zoo.ZOO_MODELS and zoo.find_weights(m.removeprefix("digits/")) is None]
    for i, name in enumerate(missing):
        emit(StudyEvent("zoo", f"digits/{name}", i, len(missing)))
        zoo.train_zoo([name])
        emit(StudyEvent("zoo", f"digits/{name}", i + 1, len(missing)))
