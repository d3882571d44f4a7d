"""``report.html``: a study in one self-contained page, readable offline and printable.

The page holds everything inline: CSS, the heatmap as inline SVG (every cell with
an SVG ``<title>``: the pair, SAT, percent transfer, |X_AB| and the interval when
computed, shown on hover without any script), the study's other figures as PNG
data URIs. It has no script and makes no request.

A study directory is untrusted input (it may come from someone else), so:

* every string read from it is HTML-escaped where it is written;
* ``study.json`` and ``sat.csv`` are read with their checks (a one-line error when
  they fail: there is no report without them); every other file is optional, and
  one that cannot be read becomes a note in its section;
* the heatmap is drawn anew from ``sat.csv``; no SVG from the directory is ever
  inlined (an inline SVG can carry script), and PNGs are embedded only after their
  signature is checked, inside ``<img>``, where nothing in them can run.

Sections (their ids are stable, for links and tests): ``settings``, ``heatmap``,
``models``, ``clusters``, ``importance``, ``ensembles``, ``approx``, ``intervals``,
``files``. A section whose analysis is absent says so.

Approximate placements (``satkit approx NEW --study DIR``) appear when their JSON
summaries are saved in the study directory as ``approx*.json``, e.g.
``--summary DIR/approx-mymodel.json``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import polars as pl

from satkit.errors import InputFileError, SatkitError
from satkit.io.atomic import atomic_output
from satkit.io.tables import read_table
from satkit.matrix.sat import check_sat_matrix
from satkit.study.layout import StudyDir, StudySettings, read_settings

SECTIONS = {
    "settings": "Settings and provenance",
    "heatmap": "SAT matrix",
    "models": "Models",
    "clusters": "Clusters",
    "importance": "Component importance",
    "ensembles": "Ensembles",
    "approx": "Approximate placements",
    "intervals": "Confidence intervals",
    "files": "Files",
}
FIGURES = {"clusters": ("clusters.png", "tsne.png"), "importance": ("importance.png",), "ensembles": ("sat_vs_err.png",)}
TABLES = ("sat_long.csv", "models.csv", "clusters.csv", "keywords.csv", "importance.csv", "ensemble.json")
MAX_PNG_BYTES = 20 << 20
MAX_JSON_BYTES = 5 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDEST_INTERVALS = 10  # pairs listed in the intervals section


def report_inputs(study_dir: str | os.PathLike) -> list[Path]:
    """The files a report of ``study_dir`` reads (present or not): an output must be none of them."""
    root = Path(study_dir)
    names = ["study.json", "sat.csv", *TABLES, *(f for figs in FIGURES.values() for f in figs)]
    return [root / n for n in names] + sorted(root.glob("approx*.json")) + sorted((root / "attacks").glob("*.safetensors"))


def write_report(study_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write :func:`build_report` of ``study_dir`` to ``output`` atomically; returns the path."""
    text = build_report(study_dir, output)
    with atomic_output(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(output)


def build_report(study_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """The report of a finished study directory as one HTML document (see the module docstring).

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
    body = [
        _header(root, settings, names),
        _guarded("settings", lambda: _settings_section(root, settings, models, r)),
        _heatmap_section(names, S, clusters, long, settings.eps_s, r.notes.get("sat_long.csv")),
        _guarded("models", lambda: _models_section(models, r.notes.get("models.csv"))),
        _guarded("clusters", lambda: _clusters_section(r, clusters, names)),
        _guarded("importance", lambda: _importance_section(r)),
        _guarded("ensembles", lambda: _ensembles_section(r)),
        _guarded("approx", lambda: _approx_section(r)),
        _guarded("intervals", lambda: _intervals_section(long)),
        _guarded("files", lambda: _files_section(root, output)),
    ]
    return _page(f"SAT study {root.name or root}", "\n".join(body))


def _guarded(sid: str, make: Callable[[], str]) -> str:
    """A section, or the section saying it could not be shown: a crafted optional file must not stop the report."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001
        return _section(sid, _absent(f"Could not be shown: {e(type(err).__name__)} reading this study's files."))


# ----------------------------------------------------------------------------- reading


def read_sat_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """The square ``sat.csv`` (empty cells allowed: an unmeasured pair), checked; a one-line error otherwise."""
    where = str(path)
    if not path.is_file():
        raise InputFileError(f"{path.parent}: no sat.csv; the study has no matrix yet (run satkit study -o {path.parent})")
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputFileError(f"{where}: cannot read the SAT matrix ({' '.join(str(e).split())[:120]})") from None
    if len(rows) < 2:
        raise InputFileError(f"{where}: no models in the SAT matrix")
    names = [c.strip() for c in rows[0][1:]]
    body = rows[1:]
    if [r[0].strip() if r else "" for r in body] != names or any(len(r) != len(names) + 1 for r in body):
        raise InputFileError(f"{where}: not a square SAT matrix with the same names on both axes; rerun satkit study")
    if len(set(names)) != len(names) or not all(names):
        raise InputFileError(f"{where}: empty or repeated model names; rerun satkit study")
    S = np.full((len(names), len(names)), np.nan)
    for i, r in enumerate(body):
        for j, cell in enumerate(r[1:]):
            cell = cell.strip()
            if cell:
                try:
                    S[i, j] = float(cell)
                except ValueError:
                    raise InputFileError(f"{where}: cell {i + 1},{j + 1} is not a number; rerun satkit study") from None
    try:
        return names, check_sat_matrix(names, S, what=where)
    except SatkitError as e:
        raise InputFileError(str(e)) from None


class _Reader:
    """Optional files of the study: each read once; a file that fails becomes a note, not an error."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: dict[str, str] = {}
        self._attacks: dict[str, dict] | None = None

    def _guard(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except SatkitError as e:
            self.notes[name] = str(e)
        except Exception as e:  # noqa: BLE001  (a hostile file must not stop the report)
            self.notes[name] = f"{name}: cannot read ({type(e).__name__})"
        return None

    def _present(self, name: str) -> Path | None:
        """The file ``name`` when it is a regular file of the directory.

        A symbolic link is left out: a shared directory could point one at the reader's
        private files, whose text would then be copied into the report.
        """
        p = self.root / name
        if p.is_symlink():
            self.notes[name] = f"{name} is a symbolic link; left out"
            return None
        return p if p.is_file() else None

    def table(self, name: str) -> pl.DataFrame | None:
        p = self._present(name)
        return self._guard(name, lambda: read_table(p, name)) if p is not None else None

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

    def attack_provenance(self, settings: StudySettings) -> dict[str, dict]:
        """Each model's attack-file provenance (header only), {} for a missing or unreadable file."""
        if self._attacks is None:
            from satkit.io.tensorfile import read_satkit_file

            study = StudyDir(self.root)
            self._attacks = {}
            for spec in settings.models:
                try:
                    self._attacks[spec] = read_satkit_file(study.attack_path(spec), "satkit.attack", verify=False).provenance
                except SatkitError:
                    self._attacks[spec] = {}
        return self._attacks

    def models(self, settings: StudySettings, clusters: dict[str, int] | None) -> pl.DataFrame | None:
        df = self.table("models.csv")
        if df is not None and "model" in df.columns:
            return df
        from satkit.study.analyses import model_summary

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


# ----------------------------------------------------------------------------- HTML pieces


def e(v: Any) -> str:
    """Escaped text of any value read from the study (quotes too: it may land in an attribute)."""
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: Any, spec: str = ".3f", empty: str = "") -> str:
    if v is None or isinstance(v, bool):
        return empty
    try:
        f = float(v)
    except (TypeError, ValueError):
        return e(v)
    return empty if math.isnan(f) else e(format(f, spec))


def _pct(v: Any, digits: int = 1) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) else f"{100 * f:.{digits}f} %"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()) -> str:
    """Rows of already-escaped cells; ``numeric`` column indices are right-aligned."""
    num = set(numeric)
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(sid: str, content: str, notes: Iterable[str] = ()) -> str:
    extra = "".join(f'<p class="note">{e(n)}</p>' for n in notes)
    return f'<section id="{sid}"><h2>{SECTIONS[sid]}</h2>{content}{extra}</section>'


def _absent(what: str) -> str:
    return f'<p class="muted">{what}</p>'


def _figure(uri: str | None, alt: str, caption: str = "") -> str:
    if uri is None:
        return ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{e(alt)}">{cap}</figure>'


def _header(root: Path, settings: StudySettings, names: list[str]) -> str:
    import satkit

    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS.items())
    return (f"<header><h1>SAT study <code>{e(root.name or root)}</code></h1>"
            f'<p class="muted">{len(names)} models, {e(settings.data.source)} data; '
            f"report by satkit {e(satkit.__version__)}. SAT = ln(max(eps_s, transfer %)): higher = more similar, "
            f"ln 100 = 4.605 at most.</p><nav>{nav}</nav></header>")


# ----------------------------------------------------------------------------- sections


def rerun_command(root: Path, s: StudySettings, random_init: bool = False) -> str:
    """``satkit study ...`` rebuilt from study.json, shell-quoted; or why it cannot be rebuilt.

    Never copied from a file: each field is checked (a value with control characters, or
    a model name starting with ``-``, would change what the shell or satkit reads).
    ``-k``, ``--ci`` and ``--batch-size`` are not recorded in study.json and are left out.
    """
    from satkit.provenance import printable, shell_quote

    def text(v: str, field: str, positional: bool = False) -> str:
        if not v or printable(v) != v or (positional and v.startswith("-")):
            raise ValueError(field)
        return v

    p = s.params
    try:
        argv = ["satkit", "study", *(text(m, "models", positional=True) for m in s.models), "--data", text(s.data.source, "data")]
        if s.data.n is not None:
            argv += ["--n", str(s.data.n)]
        if s.data.seed:
            argv += ["--data-seed", str(s.data.seed)]
        if s.data.canvas is not None:
            argv += ["--canvas", str(s.data.canvas)]
        if getattr(s.data, "labels", None):
            argv += ["--labels", text(s.data.labels, "labels")]
        if p.attack != "pgd":
            argv += ["--attack", p.attack]
        argv += ["--eps", _eps_arg(p.eps)]
        argv += ["--steps", str(p.steps)]
        if not math.isclose(p.alpha, p.spec.default_step(p.eps, p.steps), rel_tol=1e-12, abs_tol=0.0):
            argv += ["--step-size", repr(p.alpha)]
        flags = {o.name: o.flag for o in p.spec.options}
        for name, value in p.options:
            argv += [flags[name], repr(value)]
        if p.attack_all:
            argv.append("--attack-all")
        if p.seed:
            argv += ["--seed", str(p.seed)]
        if p.storage != "uint8":
            argv += ["--storage", p.storage]
        if s.eps_s != 1.0:
            argv += ["--eps-s", repr(s.eps_s)]
        if s.amp != "off":
            argv += ["--amp", s.amp]
        if s.cluster_method != "paper":
            argv += ["--cluster-method", s.cluster_method]
        if random_init:
            argv.append("--random-init")
        argv += ["-o", text(str(root), "directory")]
    except ValueError as err:
        return f"(cannot be rebuilt: {err} holds characters a command line cannot carry safely)"
    line = shell_quote(argv)
    if p.random_start != p.spec.random_start:
        line += f"   # recorded with random start {'on' if p.random_start else 'off'}, which satkit study cannot set"
    return line


def _eps_arg(eps: float) -> str:
    """8/255 when eps is a whole number of 8-bit steps (what the user typed, parsed back to the same float)."""
    k = round(eps * 255)
    return f"{k}/255" if 0 < k < 255 and k / 255 == eps else repr(float(eps))


def _eps_text(eps: float) -> str:
    arg = _eps_arg(eps)
    return f"{eps:.6g} ({arg})" if "/" in arg else f"{eps:.6g}"


def _settings_section(root: Path, s: StudySettings, models: pl.DataFrame | None, r: _Reader) -> str:
    from satkit.io.pixels import eps_steps_uint8

    p = s.params
    provs = r.attack_provenance(s)
    stored = (f"{eps_steps_uint8(p.eps)} 8-bit steps = {eps_steps_uint8(p.eps) / 255:.6g} on the stored images"
              if p.storage == "uint8" else f"{p.eps:.6g} (stored as {p.storage})")
    rows = [
        ("data", e(s.data.source)),
        ("sample", e(f"{s.data.n} images, seed {s.data.seed}" if s.data.n else "all images")
         + (e(f", canvas {s.data.canvas} px") if s.data.canvas else "")),
        ("data fingerprint", f"<code>{e(s.fingerprint)}</code>"),
        ("attack", e(f"{p.attack.upper()} L-inf ({p.spec.reference}), eps {_eps_text(p.eps)}, {p.steps} steps, "
                     f"step size {p.alpha:.6g}, random start {'on' if p.random_start else 'off'}, seed {p.seed}"
                     + "".join(f", {k} {v:g}" for k, v in p.options)
                     + ("; every sample attacked" if p.attack_all else "; only samples the model classifies correctly attacked"))),
        ("stored budget", e(stored)),
        ("SAT floor eps_s", e(f"{s.eps_s:g} %")),
        ("autocast", e(s.amp)),
        ("clustering method", e(s.cluster_method)),
    ]
    versions: dict[str, list[str]] = {}
    for spec, prov in provs.items():
        v = prov.get("versions")
        if isinstance(v, dict):
            key = ", ".join(f"{k} {v[k]}" for k in ("satkit", "torch", "timm", "python") if k in v)
            versions.setdefault(key, []).append(spec)
    if len(versions) == 1:
        rows.append(("versions (attack files)", e(next(iter(versions)))))
    elif versions:
        rows.append(("versions (attack files differ)", "<br>".join(
            e(f"{k}: {len(v)} model{'s' if len(v) != 1 else ''} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})")
            for k, v in versions.items())))
    else:
        rows.append(("versions", _absent("no attack file could be read")))
    random_init = any(isinstance(pr.get("model"), dict) and pr["model"].get("weights_id") == "random-init" for pr in provs.values())
    settings = _table(["setting", "value"], [(k, v) for k, v in rows])
    model_rows = []
    for spec in s.models:
        m = provs.get(spec, {}).get("model")
        m = m if isinstance(m, dict) else {}
        name = m.get("name") if m.get("name") else spec
        model_rows.append((e(name), e(spec) if spec != name else "", f"<code>{e(m.get('weights_id'))}</code>", e(m.get("kind"))))
    listing = _table(["model", "spec (if not the name)", "weights id", "kind"], model_rows)
    rerun = f"<h3>How to rerun</h3><pre>{e(rerun_command(root, s, random_init))}</pre>"
    return _section("settings", settings + "<h3>Models and weights</h3>" + listing + rerun)


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


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def cell_title(a: str, b: str, sat: float, row: dict | None, eps_s: float) -> str:
    """The hover text of one heatmap cell (plain text; escaped by the caller)."""
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


def heatmap_html(names: list[str], S: np.ndarray, clusters: dict[str, int] | None, long: pl.DataFrame | None,
                 eps_s: float) -> str:
    """The heatmap as inline SVG with a ``<title>`` in every cell; no XML prolog, metadata or comments."""
    from satkit.analysis.heatmap import sat_heatmap_svg

    svg, layout = sat_heatmap_svg(names, S, clusters=clusters, eps_s=eps_s)
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    shown = [names[i] for i in layout.order]
    pos = {n: i for i, n in enumerate(names)}
    lookup = _long_lookup(long)

    def titled(m: re.Match[str]) -> str:
        i, j = int(m.group(1)), int(m.group(2))
        a, b = shown[i], shown[j]
        t = cell_title(a, b, float(S[pos[a], pos[b]]), lookup.get((a, b)), eps_s)
        return f"{m.group(0)}<title>{e(t)}</title>"

    svg = _CELL.sub(titled, svg)
    return svg.replace("<svg ", '<svg class="heatmap" role="img" aria-label="SAT heatmap" ', 1)


def _heatmap_section(names, S, clusters, long, eps_s, note: str | None = None) -> str:
    how = ("rows and columns grouped by the study's clusters (white lines between clusters, cluster numbers above)"
           if clusters else "rows and columns in hierarchical order (average linkage), the tree above")
    caption = (f"<p>{len(names)} models; {how}. Colour spans the off-diagonal SAT values (brighter = more similar); "
               "the diagonal (each model against its own attack) is grey. Hover a cell for the pair, SAT, percent "
               "transfer and |X_AB|.</p>")
    return _section("heatmap", caption + f'<figure class="heatmap">{heatmap_html(names, S, clusters, long, eps_s)}</figure>',
                    [note] if note else [])


def _models_section(models: pl.DataFrame | None, note: str | None = None) -> str:
    if models is None or models.height == 0:
        return _section("models", _absent("No per-model summary (models.csv) could be made."), [note] if note else [])
    cols = models.columns
    get = lambda r, c: r.get(c) if c in cols else None  # noqa: E731
    rows = []
    for r in models.iter_rows(named=True):
        params = get(r, "parameters")
        rows.append((e(get(r, "model")), _pct(get(r, "clean_accuracy")), _pct(get(r, "self_attack_success")),
                     _num(get(r, "eps"), ".4g"), _num(get(r, "eps_stored"), ".4g"),
                     e(f"{int(params):,}") if isinstance(params, (int, float)) and not isinstance(params, bool) and params == params else "",
                     e(get(r, "input_size")), e(get(r, "cluster"))))
    t = _table(["model", "clean accuracy", "self-attack success", "eps", "stored eps", "parameters", "input size", "cluster"],
               rows, numeric=(1, 2, 3, 4, 5))
    return _section("models", "<p>From each attack file's provenance (models.csv). Self-attack success: the share of "
                    "correctly classified images the model's own attack fools; stored eps: the bound the stored "
                    "adversarial images keep.</p>" + t)


def _clusters_section(r: _Reader, clusters: dict[str, int] | None, names: list[str]) -> str:
    if not clusters:
        notes = [r.notes[k] for k in ("clusters.csv",) if k in r.notes]
        return _section("clusters", _absent("Not clustered (satkit study --no-analyses, or the matrix could not be clustered)."), notes)
    notes = []
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
        rows.append((e(c), e(len(members)), e(", ".join(members)), e("; ".join(words.get(c, []))) or '<span class="muted">no cards</span>'))
    method = r.table("clusters.csv")
    how = ""
    if method is not None and "method" in method.columns and method.height:
        how = f" Method: {e(method['method'][0])}."
    content = (f"<p>{len(set(clusters.values()))} clusters of the SAT matrix (spectral clustering).{how} "
               "Keywords: the top TF-IDF words of the members' model cards.</p>")
    content += _table(["cluster", "models", "members", "keywords"], rows, numeric=(0, 1))
    content += _figure(r.png("clusters.png"), "spectral-feature distances", "Distances of the spectral features, sorted by cluster.")
    tsne = r.png("tsne.png")
    if tsne is not None:
        content += _figure(tsne, "t-SNE map", "t-SNE map of the spectral features.")
    elif len(names) < 8:
        notes.append(f"No t-SNE map: {len(names)} models are too few for one (satkit study draws it from 8 models).")
    notes += [r.notes[k] for k in ("clusters.csv", "keywords.csv", "clusters.png", "tsne.png") if k in r.notes]
    return _section("clusters", content, notes)


def _importance_section(r: _Reader) -> str:
    df = r.table("importance.csv")
    notes = [r.notes[k] for k in ("importance.csv", "importance.png") if k in r.notes]
    if df is None or not {"component", "importance_mean"} <= set(df.columns):
        return _section("importance", _absent("No component importance in this study (too few models with cards, or not run)."), notes)
    rows = [(e(row.get("rank")), e(row["component"]), _num(row["importance_mean"]), _num(row.get("importance_std")))
            for row in df.iter_rows(named=True)]
    content = ("<p>Which architecture components explain SAT between pairs (gradient boosting, permutation "
               "importance; paper section 4.2).</p>" + _table(["rank", "component", "importance", "std"], rows, numeric=(0, 2, 3)))
    return _section("importance", content + _figure(r.png("importance.png"), "component importance"), notes)


def _ensembles_section(r: _Reader) -> str:
    d = r.json("ensemble.json")
    notes = [r.notes[k] for k in ("ensemble.json", "sat_vs_err.png") if k in r.notes]
    if not isinstance(d, dict):
        return _section("ensembles", _absent("No ensemble analysis in this study."), notes)
    content = "<p>Logit-averaging ensembles; ERR = 100 (1 - ensemble error / mean member error).</p>"
    corr = d.get("sat_vs_err_pairs")
    if isinstance(corr, dict):
        content += ("<p>SAT vs ERR over pairs: Pearson " + _num(corr.get("pearson_r"), empty="n/a") + " (p = "
                    + _num(corr.get("pearson_p"), ".2g", "n/a") + "), Spearman " + _num(corr.get("spearman_r"), empty="n/a")
                    + " (p = " + _num(corr.get("spearman_p"), ".2g", "n/a") + ").</p>")
    errs = d.get("member_errors")
    if isinstance(errs, dict) and errs:
        content += "<h3>Member errors</h3>" + _table(["model", "error %"], [(e(k), _num(v, ".2f")) for k, v in errs.items()], numeric=(1,))
    grid = d.get("grid")
    if isinstance(grid, list) and grid:
        rows = [(e(g.get("m")), e(g.get("selection")), e("" if g.get("k") is None else g.get("k")),
                 _num(g.get("mean_err"), ".1f"), _num(g.get("mean_ensemble_error"), ".2f"), e(g.get("n_draws")))
                for g in grid if isinstance(g, dict)]
        content += ("<h3>Ensembles drawn from k clusters</h3>"
                    + _table(["members", "selection", "clusters k", "mean ERR %", "mean ensemble error %", "draws"], rows,
                             numeric=(0, 2, 3, 4, 5)))
    return _section("ensembles", content + _figure(r.png("sat_vs_err.png"), "SAT vs ERR"), notes)


def _approx_section(r: _Reader) -> str:
    files = sorted(r.root.glob("approx*.json"))
    if not files:
        return _section("approx", _absent("None. To show one here: satkit approx NEW --study DIR --summary DIR/approx-NEW.json."))
    parts, notes = [], []
    for p in files:
        d = r.json(p.name)
        if not isinstance(d, dict):
            notes.append(r.notes.get(p.name, f"{p.name}: not an approx summary; left out"))
            continue
        head = (f"<h3>{e(d.get('model'))} <span class=\"muted\">({e(p.name)})</span></h3><p>joins cluster "
                f"{e(d.get('joined'))}; runner-up {e(d.get('runner_up'))}, margin {_num(d.get('margin'), empty='n/a')}.</p>")
        rows = d.get("rows") if isinstance(d.get("rows"), list) else []
        t = _table(["known model", "cluster", "|X_NA|", "approx SAT"],
                   [(e(x.get("model")), e(x.get("cluster")), e(x.get("n_both")), _num(x.get("sat_approx")))
                    for x in rows if isinstance(x, dict)], numeric=(1, 2, 3))
        parts.append(head + t)
    return _section("approx", "<p>One-sided SAT of a new model against the study (one attack, on the new model).</p>"
                    + "".join(parts), notes)


def _intervals_section(long: pl.DataFrame | None) -> str:
    if long is None or not {"sat_ci_low", "sat_ci_high", "sat"} <= set(long.columns):
        return _section("intervals", _absent("Not computed (satkit study --ci 0.95 adds them)."))
    df = long.filter(pl.col("sat_ci_low").is_not_null() & pl.col("sat_ci_high").is_not_null() & (pl.col("a") != pl.col("b")))
    if df.height == 0:
        return _section("intervals", _absent("Not computed (satkit study --ci 0.95 adds them)."))
    try:
        df = df.with_columns((pl.col("sat_ci_high").cast(pl.Float64) - pl.col("sat_ci_low").cast(pl.Float64)).alias("width"))
    except Exception:  # noqa: BLE001  (a hand-edited table with text in the bounds)
        return _section("intervals", _absent("sat_long.csv holds interval columns that are not numbers."))
    w = df["width"].to_numpy()
    widest = df.sort("width", descending=True).head(WIDEST_INTERVALS)
    rows = [(e(x["a"]), e(x["b"]), _num(x["sat"]), _num(x["sat_ci_low"]), _num(x["sat_ci_high"]), _num(x["width"]))
            for x in widest.iter_rows(named=True)]
    content = (f"<p>Bootstrap intervals of SAT per pair (sat_long.csv; level as given with --ci) over {df.height} pairs: "
               f"median width {np.median(w):.3f}, widest {np.max(w):.3f}. Every cell's interval is in its hover text.</p>"
               f"<h3>The {len(rows)} widest</h3>"
               + _table(["model A", "model B", "SAT", "low", "high", "width"], rows, numeric=(2, 3, 4, 5)))
    return _section("intervals", content)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _files_section(root: Path, output: str | os.PathLike | None = None) -> str:
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
                rows.append((e(d.name + "/"), e(f"{len(files)} files"), e(_size(total))))
            elif d.is_file(follow_symlinks=False):
                rows.append((e(d.name), "", e(_size(d.stat(follow_symlinks=False).st_size))))
        except OSError:
            continue
    content = ("<p>The study directory (report.html, this page, is not listed; attacks/ holds one attack file per model, "
               "transfer/ one table per target, logits/ clean logits).</p>" + _table(["file", "holds", "size"], rows, numeric=(2,)))
    return _section("files", content)


# ----------------------------------------------------------------------------- page

CSS = """
:root{color-scheme:light}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1b1b;background:#fff;
  max-width:1150px;margin:0 auto;padding:1.2em 1.5em 3em}
h1{font-size:1.55em;margin:.2em 0}
h2{font-size:1.25em;border-bottom:1px solid #d0d0d0;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
nav{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #eee;z-index:1}
nav a{margin-right:1em;color:#24528a;text-decoration:none}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #d8d8d8;padding:.22em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.9em}
pre{background:#f5f5f5;border:1px solid #e2e2e2;padding:.6em;white-space:pre-wrap;word-break:break-all}
figure{margin:1em 0}
figure img{max-width:min(100%,820px);height:auto}
svg.heatmap{max-width:100%;min-width:min(100%,680px);height:auto}
figcaption,.muted{color:#666}
.note{color:#7a4b00}
@media print{
  @page{margin:1.4cm}
  body{max-width:none;padding:0;font-size:10pt}
  nav{display:none}
  h2{break-after:avoid}
  figure,tr,pre{break-inside:avoid}
  section{break-before:auto}
  #heatmap{break-before:page}
  a{color:inherit;text-decoration:none}
  th{background:#eee !important;-webkit-print-color-adjust:exact;print-color-adjust:exact}
  svg.heatmap{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            # no request may leave the page: nothing but inline styles and data: images
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
