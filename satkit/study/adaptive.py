"""The adaptive sampling plan (``satkit study --precision W``): add images in chunks until every SAT cell is known to +-W.

Each SAT cell is an estimate from |X_AB| samples. The adaptive study runs the
data in nested, class-stratified chunks (the first m images of a seeded order,
then the next m, ...: :func:`satkit.data.base.stratified_order`), each chunk an
ordinary study in ``<out>/chunks/<k>/`` (the same attack and transfer jobs, the
same "is it current" rules, resumable; with an executor, ``--devices`` or ``--ray``,
or a shard of a job array, exactly like a fixed study). After each chunk it sums the
transfer counts of the chunks so far, which is the matrix of their union (the chunks
are disjoint), and recomputes the percentile-bootstrap intervals from the union's
per-sample outcomes. It stops when every off-diagonal interval's half-width is
<= W (log units), or when ``--n`` images (rounded up to whole chunks) or the data
run out. A rerun with a smaller W reuses every chunk done and adds more; a larger
W stops at the first chunk that suffices.

Only the sampling differs from a fixed study: the union's matrix goes through the
same finish (:func:`satkit.study.run.finish`), so the root holds ``sat.csv``,
``sat_long.csv`` (with the intervals), the analyses, ``report.html`` and ``study.json``,
which records the chunks used and each step's widest half-width (``adaptive``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import polars as pl

from satkit import settings as S
from satkit.errors import SatkitError
from satkit.io.tables import read_table
from satkit.matrix.sat import SatMatrix, bootstrap_ci, build_matrix
from satkit.study.config import StudyConfig

_SUMMED = ("n", "n_source_correct", "n_target_correct", "n_both", "n_fooled", "n_same_class")


def chunk_cfg(cfg: StudyConfig, k: int) -> StudyConfig:
    """Chunk ``k`` of adaptive study ``cfg``: a fixed study of the k-th ``cfg.chunk`` images, in chunks/<k>/."""
    return replace(cfg, out=str(Path(cfg.out) / "chunks" / f"{k:04d}"),
                   data=replace(cfg.data, n=None, chunk=(k, cfg.chunk)), analyses=False, ci=None, per_sample=True,
                   precision=None)


def chunk_count(cfg: StudyConfig) -> tuple[int, int]:
    """(images the adaptive study may use: ``--n`` rounded up to whole chunks, or the data; chunks that makes)."""
    total = len(replace(cfg.data, n=None).open())  # a folder is listed, not decoded
    available = total if cfg.data.n is None else min(total, math.ceil(cfg.data.n / cfg.chunk) * cfg.chunk)
    return available, math.ceil(available / cfg.chunk)


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


def sample_adaptive(cfg: StudyConfig, res: Any, run_chunk: Callable[[StudyConfig, int], Any],
                    emit: Callable[[Any], None]) -> tuple[SatMatrix, str, dict[str, Any]] | None:
    """The adaptive plan: ``run_chunk(chunk_cfg, k)`` (a fixed study) for k = 0, 1, ... until the widest
    off-diagonal half-width of the union's intervals (level ``cfg.ci``, default CI_LEVEL) is <= ``cfg.precision``.
    Returns the union's matrix (its intervals joined to the long table), the first chunk's fingerprint and the
    record ``study.json`` keeps; None while a shard waits for other shards' outputs (``res.waiting``)."""
    from satkit.study.run import StudyEvent

    level = cfg.ci if cfg.ci is not None else S.CI_LEVEL
    available, max_chunks = chunk_count(cfg)
    tables: list[pl.DataFrame] = []
    samples_all: list[pl.DataFrame] = []
    history: list[dict[str, Any]] = []
    mat, ci, hw, stopped, fingerprint = None, None, math.inf, "n", ""
    for k in range(max_chunks):
        c = chunk_cfg(cfg, k)
        r = run_chunk(c, k)
        res.chunk_results.append(r)
        for name in ("attacks_run", "attacks_skipped", "transfer_evaluations", "transfer_skipped", "model_loads",
                     "forward_samples"):
            setattr(res, name, getattr(res, name) + getattr(r, name))
        res.jobs += r.jobs
        res.attack_stats.update(r.attack_stats)
        if r.waiting:
            res.waiting += [f"chunk {k}: {w}" for w in r.waiting]
            return None
        if k == 0:
            from satkit.study.layout import read_settings

            fingerprint = read_settings(c.dir.root).fingerprint
        t, sm = chunk_tables(c)
        tables += t
        samples_all += sm
        mat, samples = union_matrix(tables, samples_all, cfg.eps_s)
        try:
            ci = bootstrap_ci(samples, mat.names, eps_s=cfg.eps_s, level=level, n_boot=cfg.n_boot,
                              seed=cfg.params.seed, matrix=mat)
        except SatkitError:
            ci = None
        hw = widest_half_width(mat.names, ci) if ci is not None else math.inf
        images = min(available, (k + 1) * cfg.chunk)
        history.append({"chunks": k + 1, "images": images, "max_half_width": None if math.isinf(hw) else hw})
        emit(StudyEvent("precision", str(c.dir.root), images, available, chunk=k, value=hw))
        if hw <= cfg.precision:
            stopped = "precision"
            break
    assert mat is not None
    if ci is not None:
        mat.long = mat.long.join(ci, on=["a", "b"], how="left")
    record = {"level": level, "stopped": stopped, "chunks_used": len(history), "images_used": history[-1]["images"],
              "images_available": available, "max_half_width": None if math.isinf(hw) else hw, "history": history}
    return mat, fingerprint, record
