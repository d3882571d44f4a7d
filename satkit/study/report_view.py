"""The data step of ``report.html``: a study directory read once into a :class:`ReportView`.

The view holds everything the page shows, as plain text and numbers already formatted
for display; the template (:mod:`satkit.study.report`) only lays it out, and escapes every
string in it. The one piece of markup in the view is the heatmap SVG, which
matplotlib draws from numbers (its text is drawn as glyph outlines; comments and
metadata, which repeat the model names, are stripped): the hover text of each cell is
kept apart as plain text, for the template to escape.

A study directory is untrusted input (it may come from someone else), so:

* ``study.json`` (:func:`satkit.study.layout.read_settings`) and ``sat.csv``
  (:func:`satkit.matrix.square.read_similarity_matrix`, the one reader of a square
  matrix) are read with their checks: a one-line error when they fail, there is no
  report without them; every other file is optional, and one that cannot be read
  becomes a note in its section;
* the heatmap is drawn anew from ``sat.csv``; no SVG from the directory is ever
  inlined (an inline SVG can carry script), and PNGs are embedded only after their
  signature is checked, inside ``<img>``, where nothing in them can run;
* a symbolic link is never followed to an optional file (it could point at the
  reader's private files, whose text would then be copied into the report).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from markupsafe import Markup

import satkit
from satkit.analysis.heatmap import sat_heatmap_svg
from satkit.errors import InputFileError, SatkitError
from satkit.formats.attack import AttackHeader
from satkit.formats.files import read_satkit_file
from satkit.formats.sections import ModelInfo
from satkit.io.pixels import eps_steps_uint8
from satkit.io.tables import read_table
from satkit.matrix.sat import check_sat_matrix
from satkit.matrix.square import read_similarity_matrix
from satkit.study.layout import StudyDir, StudySettings, eps_arg, read_settings

SECTIONS = {
    "settings": "Settings and provenance",
    "heatmap": "SAT matrix",
    "models": "Models",
    "clusters": "Clusters",
    "importance": "Component importance",
    "ensembles": "Ensembles",
    "approx": "Placements of new models",
    "intervals": "Confidence intervals",
    "precision": "Precision by images added",
    "files": "Files",
}
FIGURES = {"clusters": ("clusters.png", "tsne.png"), "importance": ("importance.png",), "ensembles": ("sat_vs_err.png",)}
TABLES = ("sat_long.csv", "models.csv", "clusters.csv", "keywords.csv", "importance.csv", "ensemble.json")
MAX_PNG_BYTES = 20 << 20
MAX_JSON_BYTES = 5 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDEST_INTERVALS = 10  # pairs listed in the intervals section


# ----------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class Cell:
    """A table cell other than plain text: ``kind`` is code, muted (a span), absent (a muted paragraph)
    or lines (one line per item of ``lines``)."""

    text: str = ""
    kind: str = "code"
    lines: tuple[str, ...] = ()


@dataclass
class Table:
    headers: tuple[str, ...]
    rows: list[tuple[str | Cell, ...]]
    numeric: frozenset[int] = frozenset()  # right-aligned column indices


@dataclass(frozen=True)
class Figure:
    uri: str  # a data: URI of a checked PNG
    alt: str
    caption: str = ""


@dataclass
class Section:
    """One section of the page. ``absent``: why it has nothing to show (the text replaces its content)."""

    absent: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SettingsSection(Section):
    table: Table | None = None  # setting, value
    models: Table | None = None
    rerun: str = ""


@dataclass
class Heatmap:
    """matplotlib's SVG cut after each cell's opening tag: (markup, hover text of that cell) pairs, then the rest."""

    parts: list[tuple[Markup, str]]
    tail: Markup


@dataclass
class HeatmapSection(Section):
    n_models: int = 0
    by_clusters: bool = False
    heatmap: Heatmap | None = None


@dataclass
class TableSection(Section):
    """models, importance: a table and figures."""

    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ClustersSection(Section):
    n_clusters: int = 0
    method: str | None = None
    table: Table | None = None
    figures: list[Figure] = field(default_factory=list)


@dataclass
class EnsemblesSection(Section):
    correlation: dict[str, str] | None = None  # pearson_r, pearson_p, spearman_r, spearman_p as shown
    member_errors: Table | None = None
    grid: Table | None = None
    figures: list[Figure] = field(default_factory=list)


@dataclass(frozen=True)
class Placement:
    model: str
    file: str
    joined: str
    runner_up: str
    margin: str
    table: Table
    kind: str = "one-sided"  # exact: every row is the full SAT (approx --study with the known models' attack files)
    interval: str = ""  # the margin's bootstrap interval over images, as text ("" when not computed)


@dataclass
class ApproxSection(Section):
    placements: list[Placement] = field(default_factory=list)


@dataclass
class IntervalsSection(Section):
    n_pairs: int = 0
    median_width: str = ""
    widest_width: str = ""
    table: Table | None = None


@dataclass
class ReportView:
    """Everything ``report.html`` shows, in page order (``sections`` keyed as :data:`SECTIONS`)."""

    title: str  # the study directory's name
    n_models: int
    data_source: str
    satkit_version: str
    sections: dict[str, Section]


# ----------------------------------------------------------------------------- loading


def load_view(study_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> ReportView:
    """The view of a finished study directory, each file read once.

    ``output`` is where the page will be written (None: stdout): its previous version,
    like any ``report.html`` in the study, is left out of the file table, so a rerun
    writes the same bytes.
    """
    root = Path(study_dir)
    settings = read_settings(root)
    names, S = read_sat_csv(root / "sat.csv")
    r = _Reader(root)
    long = r.table("sat_long.csv")
    clusters = r.clusters(names)
    models = r.models(settings, clusters)
    sections = {
        "settings": _guarded(lambda: _settings(root, settings, r)),
        "heatmap": _heatmap(names, S, clusters, long, settings.eps_s, r.notes.get("sat_long.csv")),
        "models": _guarded(lambda: _models(models, r.notes.get("models.csv"))),
        "clusters": _guarded(lambda: _clusters(r, clusters, names)),
        "importance": _guarded(lambda: _importance(r)),
        "ensembles": _guarded(lambda: _ensembles(r)),
        "approx": _guarded(lambda: _approx(r)),
        "intervals": _guarded(lambda: _intervals(long)),
        "precision": _guarded(lambda: _precision(settings)),
        "files": _guarded(lambda: _files(root, output)),
    }
    return ReportView(title=str(root.name or root), n_models=len(names), data_source=settings.data.source,
                      satkit_version=satkit.__version__, sections=sections)


def _guarded(make: Callable[[], Section]) -> Section:
    """A section, or the section saying it could not be shown: a crafted optional file must not stop the report."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001
        return Section(absent=f"Could not be shown: {type(err).__name__} reading this study's files.")


def read_sat_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """The study's square ``sat.csv`` (an empty cell: a pair not measured), checked; a one-line error otherwise."""
    if not path.is_file():
        raise InputFileError(f"{path.parent}: no sat.csv; the study has no matrix yet (run satkit study -o {path.parent})")
    names, S = read_similarity_matrix(path, allow_empty=True)
    try:
        return names, check_sat_matrix(names, S, what=str(path))
    except SatkitError as e:
        raise InputFileError(str(e)) from None


class _Reader:
    """Optional files of the study: each read once; a file that fails becomes a note, not an error."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: dict[str, str] = {}
        self._tables: dict[str, pl.DataFrame | None] = {}

    def _guard(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except SatkitError as e:
            self.notes[name] = str(e)
        except Exception as e:  # noqa: BLE001  (a hostile file must not stop the report)
            self.notes[name] = f"{name}: cannot read ({type(e).__name__})"
        return None

    def _present(self, name: str) -> Path | None:
        """The file ``name`` when it is a regular file of the directory (a symbolic link is left out)."""
        p = self.root / name
        if p.is_symlink():
            self.notes[name] = f"{name} is a symbolic link; left out"
            return None
        return p if p.is_file() else None

    def table(self, name: str) -> pl.DataFrame | None:
        if name not in self._tables:
            p = self._present(name)
            self._tables[name] = self._guard(name, lambda: read_table(p, name)) if p is not None else None
        return self._tables[name]

    def json(self, name: str) -> Any:
        p = self._present(name)
        if p is None:
            return None

        def load():
            if p.stat().st_size > MAX_JSON_BYTES:
                raise InputFileError(f"{name}: larger than {MAX_JSON_BYTES >> 20} MB; left out")
            return json.loads(p.read_text(encoding="utf-8"))

        return self._guard(name, load)

    def png(self, name: str) -> str | None:
        """A data URI of ``name`` when it is a PNG of sensible size."""
        p = self._present(name)
        if p is None:
            return None

        def load():
            if p.stat().st_size > MAX_PNG_BYTES:
                raise InputFileError(f"{name}: larger than {MAX_PNG_BYTES >> 20} MB; left out")
            data = p.read_bytes()
            if not data.startswith(PNG_SIGNATURE):
                raise InputFileError(f"{name}: not a PNG image; left out")
            return "data:image/png;base64," + base64.b64encode(data).decode("ascii")

        return self._guard(name, load)

    def figure(self, name: str, alt: str, caption: str = "") -> list[Figure]:
        uri = self.png(name)
        return [] if uri is None else [Figure(uri, alt, caption)]

    def attack_headers(self, settings: StudySettings) -> dict[str, AttackHeader | None]:
        """Each model's attack-file header (tensors not read), None for a missing or unreadable file."""
        study = StudyDir(self.root)
        out: dict[str, AttackHeader | None] = {}
        for spec in settings.models:
            try:
                out[spec] = read_satkit_file(study.attack_path(spec), "satkit.attack", verify=False).header
            except SatkitError:
                out[spec] = None
        return out

    def models(self, settings: StudySettings, clusters: dict[str, int] | None) -> pl.DataFrame | None:
        df = self.table("models.csv")
        if df is not None and "model" in df.columns:
            return df
        from satkit.study.analyses import (
            model_summary,  # lazy: only without models.csv (the whole analysis stack)
        )

        return self._guard("models.csv", lambda: model_summary(StudyDir(self.root), settings.models, clusters))

    def clusters(self, names: Sequence[str]) -> dict[str, int] | None:
        df = self.table("clusters.csv")
        if df is None:
            return None
        if not {"model", "cluster"} <= set(df.columns):
            self.notes["clusters.csv"] = "clusters.csv: no model and cluster columns; left out"
            return None
        try:
            out = {str(m): int(c) for m, c in zip(df["model"].to_list(), df["cluster"].to_list())}
        except (TypeError, ValueError):
            self.notes["clusters.csv"] = "clusters.csv: a cluster is not a whole number; left out"
            return None
        if sorted(out) != sorted(names) or any(c < 1 for c in out.values()):
            self.notes["clusters.csv"] = "clusters.csv does not cluster the models of sat.csv (an older run?); left out"
            return None
        return out

    def notes_of(self, *names: str) -> list[str]:
        return [self.notes[k] for k in names if k in self.notes]


# ----------------------------------------------------------------------------- display text


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _num(v: Any, spec: str = ".3f", empty: str = "") -> str:
    if v is None or isinstance(v, bool):
        return empty
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return empty if math.isnan(f) else format(f, spec)


def _pct(v: Any, digits: int = 1) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) else f"{100 * f:.{digits}f} %"


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


# ----------------------------------------------------------------------------- sections


def _eps_text(eps: float) -> str:
    arg = eps_arg(eps)
    return f"{eps:.6g} ({arg})" if "/" in arg else f"{eps:.6g}"


def _settings(root: Path, s: StudySettings, r: _Reader) -> SettingsSection:
    p = s.params
    heads = r.attack_headers(s)
    stored = (f"{eps_steps_uint8(p.eps)} 8-bit steps = {eps_steps_uint8(p.eps) / 255:.6g} on the stored images"
              if p.storage == "uint8" else f"{p.eps:.6g} (stored as {p.storage})")
    rows: list[tuple[str, str | Cell]] = [
        ("data", s.data.source),
        ("sample", (f"{s.data.n} images, seed {s.data.seed}" if s.data.n else "all images")
         + (f", canvas {s.data.canvas} px" if s.data.canvas else "")),
        ("data fingerprint", Cell(s.fingerprint)),
        ("attack", f"{p.attack.upper()} L-inf ({p.spec.reference}), eps {_eps_text(p.eps)}, {p.steps} steps, "
                   f"step size {p.alpha:.6g}, random start {'on' if p.random_start else 'off'}, seed {p.seed}"
                   + "".join(f", {k} {v:g}" for k, v in p.options)
                   + ("; every sample attacked" if p.attack_all else "; only samples the model classifies correctly attacked")),
        ("stored budget", stored),
        ("SAT floor eps_s", f"{s.eps_s:g} %"),
        ("autocast", s.amp),
        ("clustering method", s.cluster_method),
    ]
    versions: dict[str, list[str]] = {}
    for spec, h in heads.items():
        v = h.versions if h is not None else None
        if isinstance(v, dict):
            key = ", ".join(f"{k} {v[k]}" for k in ("satkit", "torch", "timm", "python") if k in v)
            versions.setdefault(key, []).append(spec)
    if len(versions) == 1:
        rows.append(("versions (attack files)", next(iter(versions))))
    elif versions:
        rows.append(("versions (attack files differ)", Cell(kind="lines", lines=tuple(
            f"{k}: {len(v)} model{'s' if len(v) != 1 else ''} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
            for k, v in versions.items()))))
    else:
        rows.append(("versions", Cell("no attack file could be read", "absent")))
    random_init = any(h is not None and h.model.weights_id == "random-init" for h in heads.values())
    model_rows = []
    for spec in s.models:
        h = heads.get(spec)
        m = h.model if h is not None else ModelInfo()
        name = m.name or spec
        model_rows.append((_text(name), spec if spec != name else "", Cell(_text(m.weights_id)), _text(m.kind)))
    return SettingsSection(table=Table(("setting", "value"), rows),
                           models=Table(("model", "spec (if not the name)", "weights id", "kind"), model_rows),
                           rerun=s.rerun_command(root, random_init))  # the one rerun command (StudySettings)


def _long_lookup(long: pl.DataFrame | None) -> dict[tuple[str, str], dict]:
    """(a, b) -> the sat_long.csv row of the pair, both orders (b's fool rates swapped)."""
    out: dict[tuple[str, str], dict] = {}
    if long is None or not {"a", "b"} <= set(long.columns):
        return out
    for row in long.iter_rows(named=True):
        a, b = str(row["a"]), str(row["b"])
        out[(a, b)] = row
        out.setdefault((b, a), {**row, "a": b, "b": a, "fool_rate_a_to_b": row.get("fool_rate_b_to_a"),
                                "fool_rate_b_to_a": row.get("fool_rate_a_to_b")})
    return out


def cell_title(a: str, b: str, sat: float, row: dict | None, eps_s: float) -> str:
    """The hover text of one heatmap cell (plain text; the template escapes it)."""
    if not math.isfinite(sat):
        return f"{a} × {b}: not measured"
    lines = [f"{a} × {b}", f"SAT {sat:.3f}"]
    fa = _float_or_none((row or {}).get("fool_rate_a_to_b"))
    fb = _float_or_none((row or {}).get("fool_rate_b_to_a"))
    pct = 50.0 * (fa + fb) if fa is not None and fb is not None else math.exp(sat)
    floor = sat <= math.log(eps_s) + 1e-12
    lines.append(f"transfer {pct:.1f} %" + (f" (at the floor: SAT = ln {eps_s:g})" if floor else ""))
    if fa is not None and fb is not None and a != b:
        lines.append(f"{a}'s attack fools {b}: {100 * fa:.1f} %; {b}'s fools {a}: {100 * fb:.1f} %")
    nb = (row or {}).get("n_both")
    lines.append(f"|X_AB| = {nb}" if nb is not None else "|X_AB| not recorded (no sat_long.csv)")
    lo, hi = _float_or_none((row or {}).get("sat_ci_low")), _float_or_none((row or {}).get("sat_ci_high"))
    if lo is not None and hi is not None:
        lines.append(f"interval [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


_CELL = re.compile(r'<g id="satcell-(\d+)-(\d+)">')


def heatmap(names: list[str], S: np.ndarray, clusters: dict[str, int] | None, long: pl.DataFrame | None,
            eps_s: float) -> Heatmap:
    """The heatmap as inline SVG (no XML prolog, metadata or comments) and every cell's hover text.

    The SVG is matplotlib's drawing of the numbers; the model names it holds as text (comments,
    metadata) are stripped, the axis labels are glyph outlines. Names reach the page only in
    the hover texts, which the template escapes."""
    svg, layout = sat_heatmap_svg(names, S, clusters=clusters, eps_s=eps_s)
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    svg = svg.replace("<svg ", '<svg class="heatmap" role="img" aria-label="SAT heatmap" ', 1)
    shown = [names[i] for i in layout.order]
    pos = {n: i for i, n in enumerate(names)}
    lookup = _long_lookup(long)
    parts, start = [], 0
    for m in _CELL.finditer(svg):
        a, b = shown[int(m.group(1))], shown[int(m.group(2))]
        parts.append((Markup(svg[start:m.end()]), cell_title(a, b, float(S[pos[a], pos[b]]), lookup.get((a, b)), eps_s)))
        start = m.end()
    return Heatmap(parts, Markup(svg[start:]))


def _heatmap(names, S, clusters, long, eps_s, note: str | None = None) -> HeatmapSection:
    return HeatmapSection(n_models=len(names), by_clusters=bool(clusters),
                          heatmap=heatmap(names, S, clusters, long, eps_s), notes=[note] if note else [])


def _models(models: pl.DataFrame | None, note: str | None = None) -> TableSection:
    if models is None or models.height == 0:
        return TableSection(absent="No per-model summary (models.csv) could be made.", notes=[note] if note else [])
    rows = []
    for r in models.iter_rows(named=True):
        params = r.get("parameters")
        count = isinstance(params, (int, float)) and not isinstance(params, bool) and math.isfinite(params)
        rows.append((_text(r.get("model")), _pct(r.get("clean_accuracy")), _pct(r.get("self_attack_success")),
                     _num(r.get("eps"), ".4g"), _num(r.get("eps_stored"), ".4g"), f"{int(params):,}" if count else "",
                     _text(r.get("input_size")), _text(r.get("cluster"))))
    return TableSection(table=Table(("model", "clean accuracy", "self-attack success", "eps", "stored eps", "parameters",
                                     "input size", "cluster"), rows, frozenset({1, 2, 3, 4, 5})))


def _clusters(r: _Reader, clusters: dict[str, int] | None, names: list[str]) -> ClustersSection:
    if not clusters:
        return ClustersSection(absent="Not clustered (satkit study --no-analyses, or the matrix could not be clustered).",
                               notes=r.notes_of("clusters.csv"))
    kw = r.table("keywords.csv")
    words: dict[int, list[str]] = {}
    if kw is not None and {"cluster", "keyword"} <= set(kw.columns):
        sort = ["cluster", "rank"] if "rank" in kw.columns else ["cluster"]
        for row in kw.sort(sort).iter_rows(named=True):
            try:
                words.setdefault(int(row["cluster"]), []).append(str(row["keyword"]))
            except (TypeError, ValueError):
                continue
    rows = []
    for c in sorted(set(clusters.values())):
        members = sorted(m for m, k in clusters.items() if k == c)
        rows.append((str(c), str(len(members)), ", ".join(members), "; ".join(words.get(c, [])) or Cell("no cards", "muted")))
    method = r.table("clusters.csv")
    notes = []
    figures = r.figure("clusters.png", "spectral-feature distances", "Distances of the spectral features, sorted by cluster.")
    tsne = r.figure("tsne.png", "t-SNE map", "t-SNE map of the spectral features.")
    if not tsne and len(names) < 8:
        notes.append(f"No t-SNE map: {len(names)} models are too few for one (satkit study draws it from 8 models).")
    return ClustersSection(
        n_clusters=len(set(clusters.values())),
        method=str(method["method"][0]) if method is not None and "method" in method.columns and method.height else None,
        table=Table(("cluster", "models", "members", "keywords"), rows, frozenset({0, 1})),
        figures=figures + tsne, notes=notes + r.notes_of("clusters.csv", "keywords.csv", "clusters.png", "tsne.png"))


def _importance(r: _Reader) -> TableSection:
    df = r.table("importance.csv")
    notes = r.notes_of("importance.csv")
    if df is None or not {"component", "importance_mean"} <= set(df.columns):
        return TableSection(absent="No component importance in this study (too few models with cards, or not run).",
                            notes=notes + r.notes_of("importance.png"))
    rows = [(_text(row.get("rank")), _text(row["component"]), _num(row["importance_mean"]), _num(row.get("importance_std")))
            for row in df.iter_rows(named=True)]
    figures = r.figure("importance.png", "component importance")
    return TableSection(table=Table(("rank", "component", "importance", "std"), rows, frozenset({0, 2, 3})),
                        figures=figures, notes=notes + r.notes_of("importance.png"))


def _ensembles(r: _Reader) -> EnsemblesSection:
    d = r.json("ensemble.json")
    if not isinstance(d, dict):
        return EnsemblesSection(absent="No ensemble analysis in this study.", notes=r.notes_of("ensemble.json", "sat_vs_err.png"))
    out = EnsemblesSection()
    corr = d.get("sat_vs_err_pairs")
    if isinstance(corr, dict):
        out.correlation = {k: _num(corr.get(k), ".2g" if k.endswith("_p") else ".3f", "n/a")
                           for k in ("pearson_r", "pearson_p", "spearman_r", "spearman_p")}
    errs = d.get("member_errors")
    if isinstance(errs, dict) and errs:
        out.member_errors = Table(("model", "error %"), [(_text(k), _num(v, ".2f")) for k, v in errs.items()], frozenset({1}))
    grid = d.get("grid")
    if isinstance(grid, list) and grid:
        rows = [(_text(g.get("m")), _text(g.get("selection")), _text(g.get("k")), _num(g.get("mean_err"), ".1f"),
                 _num(g.get("mean_ensemble_error"), ".2f"), _text(g.get("n_draws")))
                for g in grid if isinstance(g, dict)]
        out.grid = Table(("members", "selection", "clusters k", "mean ERR %", "mean ensemble error %", "draws"), rows,
                         frozenset({0, 2, 3, 4, 5}))
    out.figures = r.figure("sat_vs_err.png", "SAT vs ERR")
    out.notes = r.notes_of("ensemble.json", "sat_vs_err.png")
    return out


def _approx(r: _Reader) -> ApproxSection:
    files = sorted(r.root.glob("approx*.json"))
    if not files:
        return ApproxSection(absent="None. To show one here: satkit approx NEW --study DIR --summary DIR/approx-NEW.json.")
    out = ApproxSection()
    for p in files:
        d = r.json(p.name)
        if not isinstance(d, dict):
            out.notes.append(r.notes.get(p.name, f"{p.name}: not an approx summary; left out"))
            continue
        rows = d.get("rows") if isinstance(d.get("rows"), list) else []
        table = Table(("known model", "cluster", "row", "|X_NB|", "one-sided SAT", "SAT"),
                      [(_text(x.get("model")), _text(x.get("cluster")), _text(x.get("kind") or "one-sided"),
                        _text(x.get("n_both")), _num(x.get("sat_approx")), _num(x.get("sat")))
                       for x in rows if isinstance(x, dict)], frozenset({1, 3, 4, 5}))
        ci = d.get("margin_ci")
        interval = ""
        if isinstance(ci, list) and len(ci) == 2 and all(_float_or_none(c) is not None for c in ci):
            lo, hi = (_float_or_none(c) for c in ci)
            level = _float_or_none(d.get("margin_level"))
            interval = (f"{level:.0%} interval " if level is not None else "interval ") + f"{lo:.3f} .. {hi:.3f}" + (
                " (holds 0: a coin toss between the two clusters)" if lo <= 0 <= hi else "")
        out.placements.append(Placement(model=_text(d.get("model")), file=p.name, joined=_text(d.get("joined")),
                                        runner_up=_text(d.get("runner_up")), margin=_num(d.get("margin"), empty="n/a"),
                                        table=table, kind="exact" if d.get("exact") is True else "one-sided",
                                        interval=interval))
    return out


def _precision(s: StudySettings) -> TableSection:
    """An adaptive study (``--precision``): the widest interval half-width after each chunk of images."""
    a = s.adaptive
    if not isinstance(a, dict):
        return TableSection(absent="A fixed sample. satkit study --precision W adds images in chunks until every "
                                   "pair's interval half-width is at most W, and shows here how it fell.")
    hist = [h for h in (a.get("history") or []) if isinstance(h, dict)]
    rows = [(_text(h.get("chunks")), _text(h.get("images")), _num(h.get("max_half_width"), empty="n/a")) for h in hist]
    level = _float_or_none(a.get("level"))
    out = TableSection(table=Table(("chunks", "images", "widest half-width"), rows, frozenset({0, 1, 2})))
    out.notes.append(f"Target half-width {_num(s.precision)} at level {_pct(level, 0) if level is not None else '?'}; "
                     f"stopped by {_text(a.get('stopped'))} after {_text(a.get('images_used'))} of "
                     f"{_text(a.get('images_available'))} images.")
    return out


def _intervals(long: pl.DataFrame | None) -> IntervalsSection:
    none = IntervalsSection(absent="Not computed (satkit study --ci 0.95 adds them).")
    if long is None or not {"sat_ci_low", "sat_ci_high", "sat"} <= set(long.columns):
        return none
    df = long.filter(pl.col("sat_ci_low").is_not_null() & pl.col("sat_ci_high").is_not_null() & (pl.col("a") != pl.col("b")))
    if df.height == 0:
        return none
    try:
        df = df.with_columns((pl.col("sat_ci_high").cast(pl.Float64) - pl.col("sat_ci_low").cast(pl.Float64)).alias("width"))
    except Exception:  # noqa: BLE001  (a hand-edited table with text in the bounds)
        return IntervalsSection(absent="sat_long.csv holds interval columns that are not numbers.")
    w = df["width"].to_numpy()
    widest = df.sort("width", descending=True).head(WIDEST_INTERVALS)
    rows = [(_text(x["a"]), _text(x["b"]), _num(x["sat"]), _num(x["sat_ci_low"]), _num(x["sat_ci_high"]), _num(x["width"]))
            for x in widest.iter_rows(named=True)]
    return IntervalsSection(n_pairs=df.height, median_width=f"{np.median(w):.3f}", widest_width=f"{np.max(w):.3f}",
                            table=Table(("model A", "model B", "SAT", "low", "high", "width"), rows, frozenset({2, 3, 4, 5})))


def _files(root: Path, output: str | os.PathLike | None = None) -> TableSection:
    """The study directory's files and sizes, except report pages: a page listing its own previous
    version (or a copy of itself) would change with every rerun."""
    skip = {"report.html"}
    if output is not None and str(output) != "-":
        with contextlib.suppress(OSError, RuntimeError):
            if Path(output).resolve().parent == root.resolve():
                skip.add(Path(output).name)
    rows = []
    try:
        entries = sorted(os.scandir(root), key=lambda d: (not d.is_dir(follow_symlinks=False), d.name))
    except OSError:
        entries = []
    for d in entries:
        if d.name.startswith(".") or d.name in skip:
            continue  # the lock file and partial files of a running job; this page
        try:
            if d.is_dir(follow_symlinks=False):
                files = [f for f in os.scandir(d.path) if f.is_file(follow_symlinks=False) and not f.name.startswith(".")]
                total = sum(f.stat(follow_symlinks=False).st_size for f in files)
                rows.append((d.name + "/", f"{len(files)} files", _size(total)))
            elif d.is_file(follow_symlinks=False):
                rows.append((d.name, "", _size(d.stat(follow_symlinks=False).st_size)))
        except OSError:
            continue
    return TableSection(table=Table(("file", "holds", "size"), rows, frozenset({2})))
