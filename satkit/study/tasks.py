"""The study's two kinds of job, thin over :mod:`satkit.jobs`: one attack per model, one transfer job per target.

A job is a module-level function ``job(cfg, spec, device, progress=None, clean=None) -> JobReport``
that reads and writes only files under the study directory, skips work whose output
is current, and writes atomically, so any executor can run it anywhere the directory is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from satkit.data import CleanSet
from satkit.errors import SatkitError
from satkit.formats.files import SatkitFile, verify_file
from satkit.io.tables import read_table, write_table
from satkit.jobs import attack_into_file, evaluate_target
from satkit.models.registry import expected_weights_id
from satkit.study.config import StudyConfig
from satkit.transfer import ADDED_COLUMNS, TRANSFER_SCHEMA, open_attack_files


@dataclass
class JobReport:
    """What one job did (summed into the StudyResult by the study)."""

    kind: str  # attack | transfer
    spec: str
    name: str
    ran: bool
    model_loads: int = 0
    forward_samples: int = 0
    evaluations: int = 0  # transfer: (source, target) pairs evaluated
    reused: int = 0  # transfer: pairs already in the table
    stats: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = ""


_DATA_CACHE: dict[Any, CleanSet] = {}


def study_data(cfg: StudyConfig) -> CleanSet:
    """The clean set, loaded once per process (worker processes and Ray workers load it themselves)."""
    if cfg.data not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[cfg.data] = cfg.data.load()
    return _DATA_CACHE[cfg.data]


def attack_job(cfg: StudyConfig, spec: str, device: Any = "cpu", progress=None, clean: CleanSet | None = None) -> JobReport:
    """Attack ``spec`` into attacks/<slug>.safetensors, unless a current file is there."""
    clean = clean if clean is not None else study_data(cfg)
    o = attack_into_file(cfg.attack_job(spec), cfg.dir.attack_path(spec), device=device, clean=clean, reuse=True,
                         progress=progress)
    return JobReport("attack", spec, o.name, ran=o.ran, model_loads=o.model_loads, forward_samples=o.forward_samples,
                     stats=o.stats, seconds=o.seconds, device=str(device) if o.ran else "")


def open_study_attacks(cfg: StudyConfig, specs: list[str] | None = None, verify: bool = True) -> dict[str, SatkitFile]:
    """attack_key -> opened attack file, for the study's models (all must exist); ``verify=False`` only peeks."""
    files = open_attack_files([str(cfg.dir.attack_path(m)) for m in (specs or cfg.models)], verify=verify)
    return {f.header.attack_key: f for f in files}


@dataclass
class TransferState:
    """What target ``spec``'s stored tables already hold for the current attack files, and what is left."""

    kept: pl.DataFrame | None
    kept_samples: pl.DataFrame | None
    todo: list[SatkitFile]


def transfer_state(cfg: StudyConfig, spec: str, files_by_key: dict[str, Any]) -> TransferState:
    """Rows are reused when made by this target (name and weights) on an attack file still current (its key)."""
    path = cfg.dir.transfer_path(spec)
    old = _stored_table(path, cfg.name(spec), expected_weights_id(spec, cfg.model_options))
    have = set(old["attack_key"].to_list()) if old is not None else set()
    old_samples = None
    if cfg.per_sample and have:
        old_samples = _stored_samples(cfg.dir.samples_path(spec))
        have &= set(old_samples["attack_key"].unique().to_list()) if old_samples is not None else set()
    keep = list(have & set(files_by_key))
    kept = old.filter(pl.col("attack_key").is_in(keep)) if old is not None else None
    if old_samples is not None:
        old_samples = old_samples.filter(pl.col("attack_key").is_in(keep))
    return TransferState(kept, old_samples, [f for k, f in files_by_key.items() if k not in have])


def transfer_job(cfg: StudyConfig, spec: str, device: Any = "cpu", progress=None, clean: CleanSet | None = None) -> JobReport:
    """Evaluate target ``spec`` on every attack file of the study into transfer/<slug>.csv (+ per-sample outcomes)."""
    t0 = time.perf_counter()
    # peek at every file for its key; read (and so verify) only the files this target is evaluated on:
    # verifying all N files in each of N jobs would read N^2 files for a study
    files_by_key = open_study_attacks(cfg, verify=False)
    own_path = cfg.dir.attack_path(spec).resolve()
    own = next(f for f in files_by_key.values() if Path(f.path).resolve() == own_path)
    st = transfer_state(cfg, spec, files_by_key)
    if not st.todo:
        return JobReport("transfer", spec, cfg.name(spec), ran=False, reused=len(files_by_key))
    for f in [own, *(f for f in st.todo if f is not own)]:
        verify_file(f)
    # the target's own attack file holds its clean predictions: no clean pass needed
    o = evaluate_target(spec, st.todo, model_options=cfg.model_options, device=device, batch_size=cfg.batch_size,
                        amp=cfg.amp, compile=cfg.compile, per_sample=cfg.per_sample, own_attack=own, progress=progress)
    new = o.result.table()
    table = pl.concat([st.kept, new]) if st.kept is not None and st.kept.height else new
    if cfg.per_sample:  # written first: the table is what marks a pair as done
        ps = o.result.per_sample_table()
        if st.kept_samples is not None and st.kept_samples.height:
            ps = pl.concat([st.kept_samples, ps], how="diagonal_relaxed")
        write_table(ps.sort(["source", "id"]), cfg.dir.samples_path(spec))
    write_table(table.sort("source"), cfg.dir.transfer_path(spec))
    return JobReport("transfer", spec, o.name, ran=True, model_loads=1, forward_samples=o.result.forward_samples,
                     evaluations=len(st.todo), reused=len(files_by_key) - len(st.todo),
                     seconds=time.perf_counter() - t0, device=str(device))


def _stored_table(path: Path, target_name: str, weights_id: str | None) -> pl.DataFrame | None:
    if weights_id is None or not path.exists():
        return None  # unknown weights: evaluate again rather than trust a stale table
    try:
        df = read_table(path, "transfer table")
    except SatkitError:
        return None
    df = df.with_columns([pl.lit(None, dtype=TRANSFER_SCHEMA[c]).alias(c) for c in ADDED_COLUMNS if c not in df.columns])
    if not set(TRANSFER_SCHEMA).issubset(df.columns) or (df.height and set(df["target"].to_list()) != {target_name}):
        return None
    if df.height and set(df["target_weights_id"].to_list()) != {weights_id}:
        return None  # the target's weights changed: evaluate again
    try:
        return df.select(list(TRANSFER_SCHEMA)).cast(TRANSFER_SCHEMA)  # type: ignore[arg-type]
    except Exception:  # a damaged table is redone, not trusted
        return None


def _stored_samples(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = read_table(path, "per-sample table")
    except SatkitError:
        return None
    return df if "attack_key" in df.columns else None
