"""The study's analyses of its matrix: the same library calls as `satkit cluster`, `importance` and `ensemble`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from satkit.analysis.cluster import plot_spectral_distances, plot_tsne, spectral_cluster, tfidf_keywords
from satkit.analysis.ensemble import analyze_ensembles, plot_sat_vs_err
from satkit.analysis.importance import feature_importance, plot_importance
from satkit.cards import load_cards
from satkit.errors import SatkitError
from satkit.io.atomic import atomic_output
from satkit.io.tables import write_table
from satkit.io.tensorfile import read_satkit_file
from satkit.logits import logits_from_attack, open_logits_files, save_logits
from satkit.matrix.sat import SatMatrix
from satkit.study.layout import StudyDir


@dataclass
class StudyAnalysis:
    clusters: Any  # ClusterResult
    keywords: pl.DataFrame
    importance: Any  # ImportanceResult, or None when it could not be fitted (see note)
    missing_cards: list[str]
    note: str = ""
    ensembles: Any = None  # EnsembleReport


def write_logits(study: StudyDir, models: list[str]) -> None:
    """logits/<model>.safetensors from each attack file's stored clean logits (no model run), for ensembles."""
    study.logits_path(models[0]).parent.mkdir(exist_ok=True)
    for spec in models:
        path = study.logits_path(spec)
        key = read_satkit_file(study.attack_path(spec), "satkit.attack", verify=False).provenance.get("attack_key")
        if path.exists():
            try:
                if read_satkit_file(path, "satkit.logits", verify=False).provenance.get("from_attack") == key:
                    continue
            except SatkitError:
                pass
        save_logits(logits_from_attack(study.attack_path(spec)), path)


def run_analyses(mat: SatMatrix, study: StudyDir, *, k: int | None = None, seed: int = 0, method: str = "paper",
                 emit=None) -> StudyAnalysis:
    """Clusters + TF-IDF keywords + component importance + ensembles of the study's matrix, tables and plots."""
    emit = emit or (lambda stage, done, total: None)
    out = study.root
    cards = load_cards()
    cl = spectral_cluster(mat.names, mat.values, k, seed=seed, method=method)
    kw, missing = tfidf_keywords(cl.labels, cl.names, cards, top=5)
    write_table(cl.to_frame(), out / "clusters.csv")
    write_table(kw, out / "keywords.csv")
    plot_spectral_distances(cl, out / "clusters.png")
    plot_tsne(cl, out / "tsne.png", seed=seed)
    emit("clusters", 1, 3)
    imp, note = None, ""
    try:
        imp = feature_importance(mat.names, mat.values, cards, seed=seed)
    except SatkitError as e:  # e.g. too few pairs with cards: the clustering still stands
        note = f"importance skipped: {e}"
    if imp is not None:
        write_table(imp.to_frame(), out / "importance.csv")
        plot_importance(imp, out / "importance.png")
    emit("importance", 2, 3)
    ens = _ensembles(mat, cl, out, seed)
    emit("ensembles", 3, 3)
    return StudyAnalysis(clusters=cl, keywords=kw, importance=imp, missing_cards=missing, note=note, ensembles=ens)


def _ensembles(mat: SatMatrix, cl, out: Path, seed: int):
    """Logit-averaging ensembles of the study's models: ERR vs SAT, the cluster grid (paper Table 3)."""
    paths = sorted((out / "logits").glob("*.safetensors"))
    files = [f for f in open_logits_files(paths) if f.name in set(mat.names)]
    if len(files) < 3:
        return None
    report = analyze_ensembles(files, sat=(mat.names, mat.values), clusters=dict(zip(cl.names, map(int, cl.labels))), seed=seed)
    write_table(report.subsets, out / "ensemble.csv")
    if report.grid is not None:
        write_table(report.grid, out / "ensemble_grid.csv")
    plot_sat_vs_err(report, out / "sat_vs_err.png")
    with atomic_output(out / "ensemble.json") as tmp:
        tmp.write_text(json.dumps(report.summary(), indent=2, sort_keys=True) + "\n")
    return report
