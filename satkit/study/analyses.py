"""The study's analyses of its matrix: the same library calls as `satkit cluster`, `importance` and `ensemble`;
and what every study writes about its matrix and models (the heatmap, ``models.csv``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from satkit.analysis.cluster import plot_spectral_distances, plot_tsne, spectral_cluster, tfidf_keywords
from satkit.analysis.ensemble import analyze_ensembles, plot_sat_vs_err
from satkit.analysis.heatmap import plot_sat_heatmap
from satkit.analysis.importance import feature_importance, plot_importance
from satkit.cards import load_cards
from satkit.errors import SatkitError
from satkit.formats.attack import AttackStats
from satkit.formats.files import read_satkit_file
from satkit.formats.sections import ModelInfo
from satkit.io.atomic import atomic_output
from satkit.io.tables import write_table
from satkit.logits import logits_from_attack, open_logits_files, save_logits
from satkit.matrix.sat import SatMatrix
from satkit.models import model_display_name
from satkit.settings import CLUSTER_METHOD
from satkit.study.layout import StudyDir

# t-SNE places n points in 2-D to keep each one's ~perplexity nearest neighbours close; with a
# handful of models the neighbourhoods are the whole set and the map says nothing the matrix does not.
MIN_TSNE_MODELS = 8


@dataclass
class StudyAnalysis:
    clusters: Any  # ClusterResult
    keywords: pl.DataFrame
    importance: Any  # ImportanceResult, or None when it could not be fitted (see note)
    missing_cards: list[str]
    note: str = ""
    ensembles: Any = None  # EnsembleReport
    skipped: list[str] = field(default_factory=list)  # analyses left out, and why


def write_logits(study: StudyDir, models: list[str]) -> None:
    """logits/<model>.safetensors from each attack file's stored clean logits (no model run), for ensembles."""
    study.logits_path(models[0]).parent.mkdir(exist_ok=True)
    for spec in models:
        path = study.logits_path(spec)
        key = read_satkit_file(study.attack_path(spec), "satkit.attack", verify=False).header.attack_key
        if path.exists():
            try:
                if read_satkit_file(path, "satkit.logits", verify=False).header.from_attack == key:
                    continue
            except SatkitError:
                pass
        save_logits(logits_from_attack(study.attack_path(spec)), path)


def run_analyses(mat: SatMatrix, study: StudyDir, *, k: int | None = None, seed: int = 0, method: str = CLUSTER_METHOD,
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
    skipped = []
    if len(mat.names) >= MIN_TSNE_MODELS:
        plot_tsne(cl, out / "tsne.png", seed=seed)
    else:
        skipped.append(f"t-SNE map skipped: {len(mat.names)} models (< {MIN_TSNE_MODELS}); "
                       "so few points have no neighbourhoods to map, read the matrix instead")
        (out / "tsne.png").unlink(missing_ok=True)  # an older map of another set of models would mislead
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
    return StudyAnalysis(clusters=cl, keywords=kw, importance=imp, missing_cards=missing, note=note, ensembles=ens,
                         skipped=skipped)


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


# ----------------------------------------------------------------------------- what every study writes


def write_heatmaps(mat: SatMatrix, study: StudyDir, clusters: Any = None) -> None:
    """``sat.png`` and ``sat.svg`` (vector, for papers): ordered by the study's clusters when it has them."""
    labels = dict(zip(clusters.names, map(int, clusters.labels))) if clusters is not None else None
    for name in ("sat.png", "sat.svg"):
        plot_sat_heatmap(mat.names, mat.values, study.root / name, clusters=labels, eps_s=mat.eps_s)


MODEL_COLUMNS = {
    "model": pl.String, "weights_id": pl.String, "clean_accuracy": pl.Float64, "self_attack_success": pl.Float64,
    "eps": pl.Float64, "storage": pl.String, "eps_stored": pl.Float64, "parameters": pl.Int64, "input_size": pl.String,
    "cluster": pl.Int64,
}


def model_summary(study: StudyDir, models: Sequence[str], clusters: Mapping[str, int] | None = None) -> pl.DataFrame:
    """One row per model, from each attack file's provenance (no model is run; see docs/formats.md, models.csv).

    ``clean_accuracy``: the fraction of the clean set the model classifies correctly;
    ``self_attack_success``: the fraction of those its own attack fools; ``eps_stored``:
    the L-inf bound the stored adversarial images keep (for uint8, whole 8-bit steps:
    floor(255 eps) / 255); ``parameters``: see :func:`parameter_count` (empty where it
    cannot be had cheaply and safely); ``input_size``: C x H x W the
    model sees after its own resize. A model whose attack file is missing or unreadable
    keeps its name and empty cells.
    """
    clusters = clusters or {}
    rows = []
    for spec in models:
        h = None
        try:
            h = read_satkit_file(study.attack_path(spec), "satkit.attack", verify=False).header
        except SatkitError:
            pass
        if h is None:
            name = model_display_name(spec)
            rows.append({**dict.fromkeys(MODEL_COLUMNS), "model": name, "cluster": clusters.get(name)})
            continue
        st = h.stats if h.stats is not None else AttackStats()
        eps = _number(h.attack.eps)
        rows.append({
            "model": h.model.name,
            "weights_id": h.model.weights_id,
            "clean_accuracy": _number(st.source_clean_accuracy),
            "self_attack_success": _number(st.attack_success_rate),
            "eps": eps,
            "storage": h.storage,
            "eps_stored": _stored_eps(eps, h.storage),
            "parameters": parameter_count(h.model),
            "input_size": _input_size(h.model),
            "cluster": clusters.get(h.model.name),
        })
    return pl.DataFrame(rows, schema=MODEL_COLUMNS)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _stored_eps(eps: float | None, storage: Any) -> float | None:
    from satkit.io.pixels import eps_steps_uint8

    if eps is None or not 0 <= eps <= 1:
        return None
    return eps_steps_uint8(eps) / 255.0 if storage == "uint8" else eps


def _input_size(m: ModelInfo) -> str | None:
    dc = m.data_config
    size = dc.get("input_size") if isinstance(dc, dict) else None
    if isinstance(size, list) and size and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        return "x".join(map(str, size))
    return None


def parameter_count(m: ModelInfo) -> int | None:
    """Parameters of the model an attack file's header describes, or None.

    A count the file records is taken as is. Otherwise zoo and timm-name models are
    built on PyTorch's meta device (shapes only: no weights, no memory, no download;
    0.03 s for a ResNet-50 here). Model files, and timm models built with
    ``--model-kwargs``, are not built: loading a file just for a count would be slow,
    and a shared study's files are untrusted.
    """
    for key in ("parameters", "params", "n_params"):  # loader-specific: kept in the section's extras
        v = m.extra.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    kind, name = m.kind, m.name
    if not isinstance(name, str):
        return None
    try:
        import torch

        if kind == "zoo":
            from satkit.models.zoo import build_zoo_module

            with torch.device("meta"):
                module = build_zoo_module(name)[0]
        elif kind == "timm":
            import timm

            arch = name.split(".", 1)[0]
            # hub names (hf-hub:...) and unknown names would need the network or a file
            if ":" in name or not timm.is_model(arch):
                return None
            # recorded timm arguments are not replayed: a crafted attack file could name, e.g., a
            # checkpoint_path for timm to unpickle, and the count is not worth that risk
            if m.model_kwargs:
                return None
            kwargs = {}
            nc = m.num_classes
            if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
                kwargs["num_classes"] = nc
            with torch.device("meta"):
                module = timm.create_model(arch, pretrained=False, **kwargs)
        else:
            return None
        return int(sum(p.numel() for p in module.parameters()))
    except Exception:  # a count is a courtesy: an architecture that cannot be built leaves the cell empty
        return None


def write_model_summary(study: StudyDir, models: Sequence[str], clusters: Any = None,
                        attacks: StudyDir | None = None) -> pl.DataFrame:
    """``models.csv``: :func:`model_summary` of the study's models, from the attack files in ``attacks``
    (default: the study's own; an adaptive study's root: its first chunk's)."""
    labels = dict(zip(clusters.names, map(int, clusters.labels))) if clusters is not None else None
    df = model_summary(attacks or study, models, labels)
    write_table(df, study.root / "models.csv")
    return df
