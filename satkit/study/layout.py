"""The study directory: where each file lives, and ``study.json``, the study's settings.

Layout::

    study.json              settings (StudySettings): models, data, attack, eps_s, fingerprint, every option that
                            changes an output (k, ci, n_boot, cluster method, ...), an adaptive run's chunks
    chunks/<k>/             an adaptive study's chunks, each a study of its own (``--precision``)
    attacks/<model>.safetensors
    transfer/<model>.csv    one table per TARGET, one row per source
    transfer/<model>.samples.parquet   per-sample outcomes of that target
    logits/<model>.safetensors  clean logits (from the attack files: no extra model run)
    sat.csv, sat_long.csv   the SAT matrix, square and one row per pair
    same_class.csv          per pair, the share of X_AB fooled into the same wrong class (both directions' mean)
    sat.png, sat.svg        the heatmap of the matrix
    models.csv              per-model summary (accuracy, self-attack success, stored budget, size, cluster)
    clusters.csv, keywords.csv, importance.csv, ensemble*.csv/json, *.png   analyses
    approx*.json            approx placements (`satkit approx --study DIR --summary DIR/approx-NEW.json`)
    report.html             everything above on one self-contained page (`satkit report`)

``study.json`` is written only when a run has produced the matrix, so it always
describes files that exist; a failed or interrupted run leaves it as it was.
A shared study directory is untrusted input: every field is checked on read.

No symbolic links inside a study: a link in place of ``attacks/``, ``transfer/``,
``logits/``, ``chunks/`` (or a chunk), a file in them, one of the root files
above or the lock file would redirect the study's writes and deletions to
another place, so a run refuses it before any work
(:meth:`StudyDir.check_no_links`). The study root itself may be a link (an
output directory on another disk): everything then goes where it points.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satkit import settings as S
from satkit.attacks import AttackParams
from satkit.data import DataRequest
from satkit.errors import InputFileError, OutputError, SatkitError
from satkit.io.atomic import atomic_output
from satkit.io.partials import remove_stale_partials
from satkit.limits import BATCH_SIZE, CHUNK, CHUNK_INDEX, N_BOOT, K

SCHEMA_VERSION = 1


def slug(name: str) -> str:
    """File-name-safe form of a model name ("digits/resnet-s1" -> "digits__resnet-s1")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"


class StudyDir:
    """Paths of one study directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def attack_path(self, spec: str) -> Path:
        return self.root / "attacks" / f"{slug(spec)}.safetensors"

    def transfer_path(self, spec: str) -> Path:
        return self.root / "transfer" / f"{slug(spec)}.csv"

    def samples_path(self, spec: str) -> Path:
        return self.root / "transfer" / f"{slug(spec)}.samples.parquet"

    def logits_path(self, spec: str) -> Path:
        return self.root / "logits" / f"{slug(spec)}.safetensors"

    @property
    def settings_path(self) -> Path:
        return self.root / "study.json"

    def subdirs(self) -> list[Path]:
        return [self.root / "attacks", self.root / "transfer", self.root / "logits"]

    def files(self) -> list[Path]:
        """The study's own files, for "an output is never an input" when a command reads the study
        (``satkit approx --study``): the root files it writes and its sub-folders (each standing for
        every file in it). ``report.html`` and ``approx*`` files are outputs only (rebuilt on demand)."""
        return [self.root / n for n in ROOT_FILES] + [self.root / d for d in SUBDIRS]

    def check_no_links(self) -> None:
        """Refuse (one-line :class:`OutputError`) a symbolic link anywhere satkit writes, reads back or
        deletes inside the study: its sub-folders and their entries, its root files, its lock file.
        The root itself may be a link. Called before any work by every run that writes the study."""
        from satkit.io.lock import LOCK_NAME

        for name in (*ROOT_FILES, LOCK_NAME):
            _refuse_link(self.root / name, "file")
        for name in SUBDIRS:
            d = self.root / name
            if not _refuse_link(d, "folder"):
                continue
            if not d.is_dir():
                raise OutputError(f"{d} is not a directory; a study keeps its {name} there: move that file away")
            try:
                entries = list(os.scandir(d))
            except OSError as e:
                raise OutputError(f"cannot read the study folder {d} ({e.strerror})") from None
            for e in entries:
                if e.is_symlink():
                    _refuse_link(Path(e.path), "folder" if name == "chunks" else "file")

    def remove_stale_partials(self) -> None:
        """Temporary files of a killed run (never under a final name) are removed on the next run,
        only when their writer is gone (a shard writing next to us keeps its own: :mod:`satkit.io.partials`)."""
        for d in (self.root, *self.subdirs()):
            remove_stale_partials(d)


# Files a study run writes in its root and reads back (report.html and approx* are outputs only)
ROOT_FILES = ("study.json", "sat.csv", "sat_long.csv", "same_class.csv", "sat.png", "sat.svg", "models.csv",
              "clusters.csv", "keywords.csv", "clusters.png", "tsne.png", "importance.csv", "importance.png",
              "ensemble.csv", "ensemble_grid.csv", "ensemble.json", "sat_vs_err.png", "adaptive.json")
SUBDIRS = ("attacks", "transfer", "logits", "chunks")


def _refuse_link(p: Path, what: str) -> bool:
    """OutputError when ``p`` is a symbolic link; whether ``p`` exists."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise OutputError(f"cannot check {p} ({e.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{p} is a symbolic link; satkit never writes or deletes through a link inside a study: "
            f"replace it with a real {what} (or remove it)"
        )
    return True


@dataclass(frozen=True)
class StudySettings:
    """What ``study.json`` records: every setting that changes an output (so the rerun command reproduces
    the study), and for an adaptive study the chunks it ran and the precision they reached."""

    models: tuple[str, ...]
    data: DataRequest
    params: AttackParams
    amp: str
    eps_s: float
    fingerprint: str  # of the clean set; an adaptive study's root: of the first chunk (each chunk records its own)
    cluster_method: str = S.CLUSTER_METHOD
    k: int | None = None
    ci: float | None = None
    n_boot: int = S.N_BOOT
    batch_size: int | str | None = None  # recorded, though no output depends on it
    per_sample: bool = True
    analyses: bool = True
    precision: float | None = None  # adaptive sampling (satkit.study.adaptive)
    chunk: int = S.CHUNK
    adaptive: dict[str, Any] | None = None  # what the adaptive run reached: chunks, images, history of half-widths

    @classmethod
    def of(cls, cfg: Any, fingerprint: str, adaptive: dict[str, Any] | None = None) -> "StudySettings":
        """The settings of study config ``cfg`` (a :class:`satkit.study.StudyConfig`)."""
        return cls(models=cfg.models, data=cfg.data, params=cfg.params, amp=cfg.amp, eps_s=cfg.eps_s,
                   fingerprint=fingerprint, cluster_method=cfg.cluster_method, k=cfg.k, ci=cfg.ci, n_boot=cfg.n_boot,
                   batch_size=cfg.batch_size, per_sample=cfg.per_sample, analyses=cfg.analyses,
                   precision=cfg.precision, chunk=cfg.chunk, adaptive=adaptive)

    @property
    def chunk_dirs(self) -> int:
        """How many chunk studies (``chunks/0000`` ...) the study's matrix is the union of (0: not adaptive)."""
        return int(self.adaptive["chunks_used"]) if self.adaptive else 0

    def to_json(self) -> str:
        d = {
            "schema_version": SCHEMA_VERSION,
            "models": list(self.models),
            "data": self.data.source, "n": self.data.n, "data_seed": self.data.seed, "canvas": self.data.canvas,
            "labels": self.data.labels,
            "attack": self.params.to_dict(), "amp": self.amp, "eps_s": self.eps_s, "fingerprint": self.fingerprint,
            "cluster_method": self.cluster_method, "k": self.k, "ci": self.ci, "n_boot": self.n_boot,
            "batch_size": self.batch_size, "per_sample": self.per_sample, "analyses": self.analyses,
        }
        if self.data.chunk is not None:  # a chunk study of an adaptive run (satkit.study.adaptive)
            d["chunk"] = list(self.data.chunk)
        if self.precision is not None:
            d["precision"], d["chunk_size"], d["adaptive"] = self.precision, self.chunk, self.adaptive
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def rerun_command(self, root: Path, random_init: bool = False) -> str:
        """``satkit study ...`` rebuilt from these settings through the CLI's option table
        (:func:`satkit.settings.study_argv`), shell-quoted; or why it cannot be rebuilt.

        Never copied from a file: each text field is checked (a value with control characters, or
        a model name starting with ``-``, would change what the shell or satkit reads)."""
        from satkit.provenance import printable, shell_quote

        def text(v: str, field: str, positional: bool = False) -> str:
            if not v or printable(v) != v or (positional and v.startswith("-")):
                raise ValueError(field)
            return v

        p = self.params
        try:
            values: dict[str, Any] = {
                "data": text(self.data.source, "data"), "n": self.data.n, "data_seed": self.data.seed,
                "canvas": self.data.canvas, "labels": text(self.data.labels, "labels") if self.data.labels else None,
                "attack": p.attack, "eps": eps_arg(p.eps), "steps": p.steps,
                "step_size": None if math.isclose(p.alpha, p.spec.default_step(p.eps, p.steps), rel_tol=1e-12,
                                                  abs_tol=0.0) else p.alpha,
                "attack_options": p.options, "attack_all": p.attack_all, "seed": p.seed, "storage": p.storage,
                "eps_s": self.eps_s, "amp": self.amp, "cluster_method": self.cluster_method, "k": self.k,
                "ci": self.ci, "n_boot": self.n_boot, "per_sample": self.per_sample, "analyses": self.analyses,
                "batch_size": self.batch_size, "precision": self.precision, "chunk": self.chunk,
                "pretrained": not random_init,
            }
            argv = ["satkit", "study", *(text(m, "models", positional=True) for m in self.models),
                    *S.study_argv(values, {o.name: o.flag for o in p.spec.options}), "-o", text(str(root), "directory")]
        except ValueError as err:
            return f"(cannot be rebuilt: {err} holds characters a command line cannot carry safely)"
        line = shell_quote(argv)
        if p.random_start != p.spec.random_start:
            line += f"   # recorded with random start {'on' if p.random_start else 'off'}, which satkit study cannot set"
        return line


def eps_arg(eps: float) -> str:
    """8/255 when eps is a whole number of 8-bit steps (what the user typed, parsed back to the same float)."""
    k = round(eps * 255)
    return f"{k}/255" if 0 < k < 255 and k / 255 == eps else repr(float(eps))


def write_settings(study: StudyDir, settings: StudySettings) -> None:
    with atomic_output(study.settings_path) as tmp:
        tmp.write_text(settings.to_json(), encoding="utf-8")


def _field(d: dict, key: str, kind: type | tuple, where: Path, optional: bool = False) -> Any:
    if key not in d or d[key] is None:
        if optional:
            return None
        raise InputFileError(f"{where}: '{key}' is missing; rerun satkit study")
    v = d[key]
    if isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InputFileError(f"{where}: '{key}' has the wrong type; rerun satkit study")
    if not isinstance(v, kind):
        raise InputFileError(f"{where}: '{key}' has the wrong type; rerun satkit study")
    return v


def read_settings(study_dir: str | Path) -> StudySettings:
    """``study.json`` of ``study_dir``, every field checked (type and range); a one-line error otherwise."""
    d = Path(study_dir)
    p = d / "study.json"
    if not d.is_dir():
        raise InputFileError(f"{d}: no such study directory; run `satkit study -o {d}` first")
    if not p.is_file():
        raise InputFileError(f"{d}: not a study directory (no study.json); run `satkit study -o {d}` first")
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise InputFileError(f"{p}: not a valid study.json; rerun satkit study") from None
    if not isinstance(s, dict):
        raise InputFileError(f"{p}: not a valid study.json; rerun satkit study")
    version = s.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputFileError(f"{p}: written by a newer satkit (schema {version}); upgrade satkit")
    models = _field(s, "models", list, p)
    if not models or not all(isinstance(m, str) and m.strip() for m in models) or len(set(models)) != len(models):
        raise InputFileError(f"{p}: 'models' must be a list of distinct model names; rerun satkit study")
    n = _field(s, "n", int, p, optional=True)
    seed = _field(s, "data_seed", int, p, optional=True) or 0
    canvas = _field(s, "canvas", int, p, optional=True)
    if seed < 0:
        raise InputFileError(f"{p}: data_seed out of range; rerun satkit study")
    # n, canvas and chunk: their one range (satkit.limits), checked when the DataRequest is built below
    a = _field(s, "attack", dict, p)
    try:
        params = AttackParams.from_dict(a)
    except (KeyError, TypeError, ValueError):
        raise InputFileError(f"{p}: attack settings are incomplete; rerun satkit study") from None
    except SatkitError as e:
        raise InputFileError(f"{p}: attack settings out of range ({e})") from None
    eps_s = _field(s, "eps_s", (int, float), p, optional=True)
    eps_s = S.EPS_S if eps_s is None else float(eps_s)
    if not (math.isfinite(eps_s) and 0 < eps_s < 100):
        raise InputFileError(f"{p}: eps_s must be in (0, 100); rerun satkit study")
    amp = _field(s, "amp", str, p, optional=True) or "off"
    if amp not in ("off", "bf16", "fp16"):
        raise InputFileError(f"{p}: unknown amp '{amp}'")
    fingerprint = _field(s, "fingerprint", str, p)
    # study.json without a schema version was written when satkit clustered with NJW only
    method = _field(s, "cluster_method", str, p, optional=True) or (S.CLUSTER_METHOD if version >= 1 else "njw")
    from satkit.analysis.cluster import METHODS

    if method not in METHODS:
        raise InputFileError(f"{p}: unknown cluster_method '{method}'")
    labels = _field(s, "labels", str, p, optional=True)
    chunk = _field(s, "chunk", list, p, optional=True)
    if chunk is not None:
        if not (len(chunk) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in chunk)
                and chunk[0] >= 0 and chunk[1] > 0 and n is None):
            raise InputFileError(f"{p}: 'chunk' must be [index >= 0, size > 0] without 'n'; rerun satkit study")
        chunk = (chunk[0], chunk[1])
    try:
        data = DataRequest(source=_field(s, "data", str, p), n=n, seed=seed, canvas=canvas, labels=labels, chunk=chunk)
    except SatkitError as e:  # a size out of its range: refused before any work, as on the command line
        raise InputFileError(f"{p}: {e}") from None
    return StudySettings(models=tuple(models), data=data, params=params, amp=amp, eps_s=eps_s, fingerprint=fingerprint,
                         cluster_method=method, **_recorded(s, p))


def _recorded(s: dict, p: Path) -> dict[str, Any]:
    """The settings study.json records since the rerun command reproduces every output (absent in older files:
    their defaults), each checked against its one range."""
    bad = "; rerun satkit study"
    try:
        k = K.check_optional(s.get("k"))
        n_boot = N_BOOT.check(s.get("n_boot", S.N_BOOT))
        batch = s.get("batch_size")
        if batch is not None and batch != "auto":
            BATCH_SIZE.check(batch)
        chunk = CHUNK.check(s.get("chunk_size", S.CHUNK))
    except SatkitError as e:
        raise InputFileError(f"{p}: {e}") from None
    ci, precision = s.get("ci"), s.get("precision")
    for name, v in (("ci", ci), ("precision", precision)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0
                              or (name == "ci" and v >= 1)):
            raise InputFileError(f"{p}: '{name}' out of range{bad}")
    flags = {n: s.get(n, True) for n in ("per_sample", "analyses")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise InputFileError(f"{p}: 'per_sample' and 'analyses' must be true or false{bad}")
    adaptive = s.get("adaptive")
    if precision is not None and not (isinstance(adaptive, dict) and isinstance(adaptive.get("chunks_used"), int)
                                      and not isinstance(adaptive.get("chunks_used"), bool)
                                      and 0 < adaptive["chunks_used"] <= CHUNK_INDEX.high
                                      and isinstance(adaptive.get("history"), list)):
        raise InputFileError(f"{p}: 'adaptive' must record the chunks used and their history{bad}")
    return dict(k=k, ci=ci, n_boot=n_boot, batch_size=batch, chunk=chunk, precision=precision,
                adaptive=adaptive if precision is not None else None, **flags)
