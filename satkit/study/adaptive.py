"""``satkit study --precision W``: add images in chunks until every SAT cell is known to +-W.

Each SAT cell is an estimate from |X_AB| samples. The adaptive study runs the
data in nested, class-stratified chunks (the first m images of a seeded order,
then the next m, ...: :func:`satkit.data.base.stratified_order`), each chunk an
ordinary study in ``<out>/chunks/<k>/`` (the same attack and transfer jobs, the
same "is it current" rules, resumable). After each chunk it sums the transfer
counts of the chunks so far, which is the matrix of their union (the chunks are
disjoint), and recomputes the percentile-bootstrap intervals from the union's
per-sample outcomes. It stops when every off-diagonal interval's half-width is
<= W (log units), or when ``--n`` images (rounded up to whole chunks) or the data
run out. A rerun with a smaller W reuses every chunk done and adds more; a larger
W stops at the first chunk that suffices.

The root holds the union's ``sat.csv``, ``sat_long.csv`` (with the intervals),
``same_class.csv``, ``clusters.csv`` and ``adaptive.json``: the settings, how
many chunks and images were used, and each step's widest half-width.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from satkit.errors import ParameterError, SatkitError
from satkit.io.atomic import atomic_output
from satkit.io.tables import read_table, write_table
from satkit.limits import CHUNK
from satkit.matrix.sat import SatMatrix, bootstrap_ci, build_matrix
from satkit.study.config import StudyConfig
from satkit.study.run import StudyEvent, StudyResult, check_study_outputs, run_study

_SUMMED = ("n", "n_source_correct", "n_target_correct", "n_both", "n_fooled", "n_same_class")
DEFAULT_CHUNK = 100
DEFAULT_LEVEL = 0.95


@dataclass
class AdaptiveResult:
    out_dir: Path
    matrix: SatMatrix
    chunks: int  # chunks used
    images: int  # images used (the union of the chunks)
    available: int  # images the run could have used (--n rounded up to chunks, or the data)
    half_width: float  # widest off-diagonal interval half-width at the stop
    stopped: str  # "precision" | "n"
    history: list[dict[str, Any]] = field(default_factory=list)
    chunk_results: list[StudyResult] = field(default_factory=list)


def _chunk_cfg(cfg: StudyConfig, k: int, m: int) -> StudyConfig:
    return replace(cfg, out=str(Path(cfg.out) / "chunks" / f"{k:04d}"), data=replace(cfg.data, n=None, chunk=(k, m)),
                   analyses=False, ci=None, per_sample=True)


def chunk_tables(c: StudyConfig) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """A finished chunk study's transfer tables and per-sample outcomes (read once per chunk, not once per step)."""
    return ([read_table(c.dir.transfer_path(spec), "transfer table") for spec in c.models],
            [read_table(c.dir.samples_path(spec), "per-sample table") for spec in c.models])


def union_matrix(tables: list[pl.DataFrame], samples: list[pl.DataFrame], eps_s: float) -> tuple[SatMatrix, pl.DataFrame]:
    """The SAT matrix of the union of disjoint chunks (their counts summed) and their per-sample outcomes."""
    df = pl.concat(tables, how="diagonal_relaxed")
    has_same = "n_same_class" in df.columns and df["n_same_class"].null_count() == 0
    summed = df.group_by(["source", "target"], maintain_order=True).agg(
        [pl.col(c).sum() for c in _SUMMED if c in df.columns and (c != "n_same_class" or has_same)])
    return build_matrix([summed], eps_s=eps_s), pl.concat(samples, how="diagonal_relaxed")


def widest_half_width(names: list[str], ci: pl.DataFrame) -> float:
    """The largest (high - low) / 2 over the off-diagonal pairs; inf when an interval is missing."""
    off = ci.filter(pl.col("a") != pl.col("b"))
    if off.height < len(names) * (len(names) - 1) // 2 or off["sat_ci_low"].null_count() or off["sat_ci_high"].null_count():
        return math.inf
    return float(((off["sat_ci_high"] - off["sat_ci_low"]) / 2).max())


def run_adaptive(cfg: StudyConfig, precision: float, *, chunk: int = DEFAULT_CHUNK, level: float = DEFAULT_LEVEL,
                 n_boot: int = 1000, device: Any = "cpu", executor: Any = None,
                 on_event: Callable[[StudyEvent], None] | None = None,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> AdaptiveResult:
    """Run chunk studies of ``chunk`` images until the widest off-diagonal SAT interval is <= ``precision``."""
    if not (isinstance(precision, (int, float)) and math.isfinite(precision) and precision > 0):
        raise ParameterError(f"--precision must be a positive number of log units (e.g. 0.2), got {precision}")
    CHUNK.check(chunk)
    if len(cfg.models) < 2:
        raise ParameterError("--precision needs at least two models (it bounds the off-diagonal cells)")
    check_study_outputs(cfg)  # each chunk study checks its own directory again
    total = len(replace(cfg.data, n=None).open())  # a folder is listed, not decoded
    available = total if cfg.data.n is None else min(total, math.ceil(cfg.data.n / chunk) * chunk)
    max_chunks = math.ceil(available / chunk)
    root = Path(cfg.out)
    tables: list[pl.DataFrame] = []
    samples_all: list[pl.DataFrame] = []
    history: list[dict[str, Any]] = []
    results: list[StudyResult] = []
    mat, ci, hw, stopped = None, None, math.inf, "n"
    for k in range(max_chunks):
        c = _chunk_cfg(cfg, k, chunk)
        results.append(run_study(c, device=device, executor=executor, on_event=on_event))
        t, sm = chunk_tables(c)
        tables += t
        samples_all += sm
        mat, samples = union_matrix(tables, samples_all, cfg.eps_s)
        try:
            ci = bootstrap_ci(samples, mat.names, eps_s=cfg.eps_s, level=level, n_boot=n_boot, seed=cfg.params.seed,
                              matrix=mat)
        except SatkitError:
            ci = None
        hw = widest_half_width(mat.names, ci) if ci is not None else math.inf
        images = min(total, (k + 1) * chunk)
        step = {"chunks": k + 1, "images": images, "max_half_width": hw}
        history.append(step)
        if on_step:
            on_step(step)
        if hw <= precision:
            stopped = "precision"
            break
    assert mat is not None
    if ci is not None:
        mat.long = mat.long.join(ci, on=["a", "b"], how="left")
    images = history[-1]["images"]
    write_table(mat.frame(), root / "sat.csv")
    write_table(mat.long, root / "sat_long.csv")
    if mat.same_class is not None:
        write_table(mat.frame(mat.same_class), root / "same_class.csv")
    if cfg.analyses and len(mat.names) >= 3 and not np.isnan(mat.values).any():
        from satkit.analysis.cluster import spectral_cluster

        try:
            write_table(spectral_cluster(mat.names, mat.values, cfg.k, seed=cfg.params.seed,
                                         method=cfg.cluster_method).to_frame(), root / "clusters.csv")
        except SatkitError:
            pass  # a matrix without cluster structure: the matrix stands
    summary = {
        "precision": precision, "chunk": chunk, "level": level, "n_boot": n_boot, "stopped": stopped,
        "chunks_used": len(history), "images_used": images, "images_available": available,
        "max_half_width": None if math.isinf(hw) else hw,
        "history": [{**h, "max_half_width": None if math.isinf(h["max_half_width"]) else h["max_half_width"]}
                    for h in history],
        "study": {"models": list(cfg.models), "data": cfg.data.source, "data_seed": cfg.data.seed,
                  "attack": cfg.params.to_dict(), "eps_s": cfg.eps_s},
    }
    with atomic_output(root / "adaptive.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return AdaptiveResult(root, mat, len(history), images, available, hw, stopped, history, results)
