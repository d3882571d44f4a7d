"""``satkit study``: zoo training if needed -> attack each model -> transfer all -> matrix.

Layout of a study directory::

    study.json              settings of the study (models, data, attack)
    attacks/<model>.safetensors
    transfer/<model>.csv    one table per TARGET, one row per source
    sat.csv                 the SAT matrix (square layout)
    sat_long.csv            one row per pair: |X_AB|, both fool rates, SAT
    clusters.csv            spectral clusters (k by eigengap unless given) + coordinates
    keywords.csv            top-5 TF-IDF card keywords per cluster
    clusters.png, tsne.png  spectral-distance heatmap (paper Fig. 4), t-SNE map (Fig. 1)
    importance.csv/.png     component importance for SAT (paper Fig. 3)
    logits/<model>.safetensors  clean logits (taken from the attack files: no extra model run)
    ensemble.csv, ensemble_grid.csv, ensemble.json, sat_vs_err.png  logit-averaging ensembles

The analyses (cheap) are redone on every run; they need >= 3 models and a full matrix.

``shard=(i, n)`` splits the work for job arrays: shard i attacks, and evaluates as a
target, every n-th model starting at i. A shard stops (``result.waiting``) when it
needs outputs of other shards; running every shard twice (attacks, then
transfers; or the same array again after the first finishes) completes the study,
and any shard's last run writes the matrix.

Work whose output exists and matches its inputs is skipped, so a rerun (or a run
after a crash or a kill) resumes. Every file is written atomically. Adding one
model to a finished N-model study costs one attack plus 2N+1 transfer
evaluations (the new source on N old targets, N old sources plus itself on the new target).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from satkit.matrix.sat import DEFAULT_EPS_S, SatMatrix, build_matrix
from satkit.transfer import TRANSFER_SCHEMA, open_attack_files, run_transfer
from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.data import CleanSet, load_data
from satkit.errors import OutputError, SatkitError
from satkit.io.atomic import atomic_output
from satkit.io.tables import read_table, write_table
from satkit.io.tensorfile import read_satkit_file
from satkit.models import ModelOptions, load_model
from satkit.models.registry import expected_weights_id

# Digits default eps: chosen from a measured sweep (docs/study.md): every zoo model's own
# attack succeeds on >= 90 % of samples and same-architecture pairs score above
# cross-architecture pairs.
DIGITS_EPS = 0.1


def default_models() -> list[str]:
    from satkit.models import zoo

    return [f"digits/{n}" for n in zoo.ZOO_MODELS]


def slug(name: str) -> str:
    """File-name-safe form of a model name ("digits/resnet-s1" -> "digits__resnet-s1")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"


@dataclass
class StudyEvent:
    """What the study tells its progress callback: a stage, a model, and done/total in the stage's unit."""

    stage: str  # zoo | data | attack | transfer | matrix | analysis
    model: str
    done: int
    total: int
    skipped: bool = False


@dataclass
class StudyResult:
    out_dir: Path
    matrix: SatMatrix
    attacks_run: int = 0
    attacks_skipped: int = 0
    transfer_evaluations: int = 0  # (source, target) pairs evaluated in this run
    transfer_skipped: int = 0
    model_loads: int = 0
    forward_samples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    attack_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    analysis: "StudyAnalysis | None" = None
    waiting: list[str] = field(default_factory=list)  # with --shard: outputs other shards have not made yet
    jobs: list["JobReport"] = field(default_factory=list)  # what each job that was dispatched did


def _attack_matches(path: Path, model_name: str, params: AttackParams, fingerprint: str, weights_id: str | None) -> dict[str, Any] | None:
    """The existing attack file's provenance if it was made with these inputs, else None."""
    if not path.exists():
        return None
    try:
        f = read_satkit_file(path, "satkit.attack")
    except SatkitError:
        return None  # damaged or foreign: redo
    p = f.provenance
    ok = (
        "clean_logits" in f.keys  # files from before clean logits were stored are redone
        and p.get("model", {}).get("name") == model_name
        and p.get("data", {}).get("fingerprint") == fingerprint
        and p.get("attack") == params.to_dict()
        and p.get("storage_dtype") == params.storage
        and weights_id is not None  # unknown weights: redo rather than trust a stale file
        and p.get("model", {}).get("weights_id") == weights_id
    )
    return p if ok else None


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study job needs, picklable: jobs run in this process, in worker processes or as Ray tasks."""

    out: str
    models: tuple[str, ...]
    data: str = "digits"
    n: int | None = None
    data_seed: int = 0
    canvas: int | None = None
    params: AttackParams = field(default_factory=AttackParams)
    batch_size: int | str = 128  # or "auto"
    amp: str = "off"
    model_options: ModelOptions | None = None
    per_sample: bool = True
    compile: bool = False

    def attack_path(self, spec: str) -> Path:
        return Path(self.out) / "attacks" / f"{slug(spec)}.safetensors"

    def transfer_path(self, spec: str) -> Path:
        return Path(self.out) / "transfer" / f"{slug(spec)}.csv"

    def samples_path(self, spec: str) -> Path:
        return Path(self.out) / "transfer" / f"{slug(spec)}.samples.parquet"


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


_DATA_CACHE: dict[tuple, CleanSet] = {}


def _study_data(cfg: StudyConfig) -> CleanSet:
    """The clean set, loaded once per process (worker processes and Ray workers load it themselves)."""
    key = (cfg.data, cfg.canvas, cfg.n, cfg.data_seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(cfg.data, canvas=cfg.canvas, n=cfg.n, seed=cfg.data_seed)
    return _DATA_CACHE[key]


def _load(spec: str, cfg: StudyConfig, device: Any):
    from satkit.models.registry import prepare_model

    return prepare_model(load_model(spec, cfg.model_options, device), compile=cfg.compile)


def attack_job(cfg: StudyConfig, spec: str, device: Any = "cpu", progress=None, clean: CleanSet | None = None) -> JobReport:
    """Attack ``spec`` on the study's clean set into attacks/<slug>.safetensors (skipped if a matching file exists)."""
    from satkit.models.batching import resolve_batch_size
    from satkit.models.registry import model_display_name

    t0 = time.perf_counter()
    clean = clean if clean is not None else _study_data(cfg)
    path = cfg.attack_path(spec)
    name = model_display_name(spec, cfg.model_options)
    prov = _attack_matches(path, name, cfg.params, clean.fingerprint, expected_weights_id(spec, cfg.model_options))
    if prov is not None:
        return JobReport("attack", spec, name, ran=False, stats=prov.get("stats", {}))
    lm = _load(spec, cfg, device)
    bs = resolve_batch_size(cfg.batch_size, lm, clean.images[:1], kind="attack", n=len(clean), amp=cfg.amp)
    r = run_attack(lm, clean, cfg.params, batch_size=bs, amp=cfg.amp, progress=progress)
    save_attack(r, path)
    return JobReport("attack", spec, name, ran=True, model_loads=1, forward_samples=len(clean) * (cfg.params.steps + 2),
                     stats=r.provenance["stats"], seconds=time.perf_counter() - t0, device=str(device))


def _transfer_state(cfg: StudyConfig, spec: str, files_by_key: dict[str, Any]):
    """(table rows to keep, per-sample rows to keep, attack files still to evaluate) for target ``spec``."""
    from satkit.models.registry import model_display_name

    name = model_display_name(spec, cfg.model_options)
    old = _read_existing_transfer(cfg.transfer_path(spec), name, expected_weights_id(spec, cfg.model_options))
    have = set(old["attack_key"].to_list()) if old is not None else set()
    old_samples = None
    if cfg.per_sample and have:
        old_samples = _read_existing_samples(cfg.samples_path(spec))
        have &= set(old_samples["attack_key"].unique().to_list()) if old_samples is not None else set()
    todo = [f for k, f in files_by_key.items() if k not in have]
    kept = old.filter(pl.col("attack_key").is_in(list(have & set(files_by_key)))) if old is not None else None
    if old_samples is not None:
        old_samples = old_samples.filter(pl.col("attack_key").is_in(list(have & set(files_by_key))))
    return kept, old_samples, todo


def _open_study_attacks(cfg: StudyConfig) -> dict[str, Any]:
    files = open_attack_files([str(cfg.attack_path(m)) for m in cfg.models])
    return {f.provenance["attack_key"]: f for f in files}


def transfer_job(cfg: StudyConfig, spec: str, device: Any = "cpu", progress=None, clean: CleanSet | None = None) -> JobReport:
    """Evaluate target ``spec`` on every attack file of the study into transfer/<slug>.csv (+ per-sample outcomes)."""
    from satkit.models.batching import resolve_batch_size
    from satkit.models.registry import model_display_name

    t0 = time.perf_counter()
    files_by_key = _open_study_attacks(cfg)
    own = next(f for f in files_by_key.values() if Path(f.path) == cfg.attack_path(spec))
    name = model_display_name(spec, cfg.model_options)
    kept, kept_samples, todo = _transfer_state(cfg, spec, files_by_key)
    if not todo:
        return JobReport("transfer", spec, name, ran=False, reused=len(files_by_key))
    lm = _load(spec, cfg, device)
    bs = (resolve_batch_size(cfg.batch_size, lm, own.get("clean")[:1], kind="transfer", n=len(own.get("labels")), amp=cfg.amp)
          if cfg.batch_size == "auto" else int(cfg.batch_size))
    # the target's own attack file holds its clean predictions: no clean pass needed
    tr = run_transfer(lm, todo, batch_size=bs, amp=cfg.amp, own_attack=own, per_sample=cfg.per_sample, progress=progress)
    new = tr.table()
    table = pl.concat([kept, new]) if kept is not None and kept.height else new
    if cfg.per_sample:  # written first: the table is what marks a pair as done
        ps = tr.per_sample_table()
        if kept_samples is not None and kept_samples.height:
            ps = pl.concat([kept_samples, ps], how="vertical_relaxed")
        write_table(ps.sort(["source", "id"]), cfg.samples_path(spec))
    write_table(table.sort("source"), cfg.transfer_path(spec))
    return JobReport("transfer", spec, name, ran=True, model_loads=1, forward_samples=tr.forward_samples,
                     evaluations=len(todo), reused=len(files_by_key) - len(todo), seconds=time.perf_counter() - t0,
                     device=str(device))


def run_study(
    models: list[str] | None = None,
    *,
    data: str = "digits",
    out_dir: str | Path = "satkit-study",
    params: AttackParams | None = None,
    n: int | None = None,
    data_seed: int = 0,
    canvas: int | None = None,
    batch_size: int | str = 128,
    device: Any = "cpu",
    amp: str = "off",
    eps_s: float = DEFAULT_EPS_S,
    model_options: ModelOptions | None = None,
    analyses: bool = True,
    k: int | None = None,
    shard: tuple[int, int] | None = None,
    executor: Any = None,
    per_sample: bool = True,
    ci: float | None = None,
    compile: bool = False,
    on_event: Callable[[StudyEvent], None] | None = None,
) -> StudyResult:
    """Run (or resume) a study in ``out_dir``; ``executor`` decides where jobs run (default: here, on ``device``)."""
    from satkit.study.executors import LocalExecutor

    models = list(models) if models else default_models()
    if len(set(models)) != len(models):
        raise SatkitError("the model list names a model twice")
    if len({slug(m) for m in models}) != len(models):
        raise SatkitError("two model names map to the same file name in the study directory; rename one (--name)")
    if ci is not None and not 0 < ci < 1:
        raise SatkitError(f"--ci must be in (0, 1), e.g. 0.95; got {ci}")
    if ci is not None and not per_sample:
        raise SatkitError("--ci needs per-sample outcomes; drop --no-per-sample")
    params = params or AttackParams(eps=DIGITS_EPS if data.startswith("digits") else 8 / 255)
    out = Path(out_dir)
    emit = on_event or (lambda e: None)
    try:
        (out / "attacks").mkdir(parents=True, exist_ok=True)
        (out / "transfer").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create study directory {out}: {e.strerror}") from None
    _remove_stale_partials(out)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    _ensure_zoo(models, emit)
    timings["zoo"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cfg = StudyConfig(out=str(out.resolve()), models=tuple(models), data=data, n=n, data_seed=data_seed, canvas=canvas,
                      params=params, batch_size=batch_size, amp=amp, model_options=model_options, per_sample=per_sample,
                      compile=compile)
    clean = _study_data(cfg)
    emit(StudyEvent("data", data, len(clean), len(clean)))
    timings["data"] = time.perf_counter() - t0
    executor = executor or LocalExecutor(device, clean)

    def job_progress(stage: str, spec: str, done: int, total: int) -> None:
        emit(StudyEvent(stage, spec, done, total))

    res = StudyResult(out_dir=out, matrix=None)  # type: ignore[arg-type]
    _write_settings(out, models, data, params, n, data_seed, canvas, eps_s, clean)
    mine = set(shard_share(models, shard))

    # wave 1: attacks
    t0 = time.perf_counter()
    from satkit.models.registry import model_display_name

    to_attack = []
    for spec in models:
        prov = _attack_matches(cfg.attack_path(spec), model_display_name(spec, model_options), params, clean.fingerprint,
                               expected_weights_id(spec, model_options))
        if prov is not None:
            res.attacks_skipped += 1
            res.attack_stats[model_display_name(spec, model_options)] = prov.get("stats", {})
            emit(StudyEvent("attack", spec, len(clean), len(clean), skipped=True))
        elif spec in mine:
            to_attack.append(spec)
        else:
            res.waiting.append(f"attack of {spec}")
    for rep in executor.run(attack_job, cfg, to_attack, "attack", job_progress):
        _add_report(res, rep)
    timings["attack"] = time.perf_counter() - t0
    if res.waiting:
        res.seconds = timings
        return res

    _logits_all(models, {m: cfg.attack_path(m) for m in models}, out)

    # wave 2: transfers, one job per target
    t0 = time.perf_counter()
    files_by_key = _open_study_attacks(cfg)
    to_eval = []
    for spec in models:
        _, _, todo = _transfer_state(cfg, spec, files_by_key)
        if not todo:
            res.transfer_skipped += len(files_by_key)
            emit(StudyEvent("transfer", spec, len(files_by_key), len(files_by_key), skipped=True))
        elif spec in mine:
            to_eval.append(spec)
        else:
            res.waiting.append(f"transfers to {spec}")
    for rep in executor.run(transfer_job, cfg, to_eval, "transfer", job_progress):
        _add_report(res, rep)
    timings["transfer"] = time.perf_counter() - t0
    if res.waiting:
        res.seconds = timings
        return res

    t0 = time.perf_counter()
    tables = [read_table(cfg.transfer_path(m), "transfer table") for m in models]
    mat = build_matrix(tables, eps_s=eps_s)
    if ci is not None:
        from satkit.matrix.sat import bootstrap_ci

        samples = pl.concat([read_table(cfg.samples_path(m), "per-sample table") for m in models], how="vertical_relaxed")
        mat.long = mat.long.join(bootstrap_ci(samples, mat.names, eps_s=eps_s, level=ci, seed=params.seed), on=["a", "b"], how="left")
    write_table(mat.frame(), out / "sat.csv")
    write_table(mat.long, out / "sat_long.csv")
    emit(StudyEvent("matrix", "sat.csv", 1, 1))
    timings["matrix"] = time.perf_counter() - t0
    res.matrix = mat
    if analyses and len(mat.names) >= 3 and not np.isnan(mat.values).any():
        t0 = time.perf_counter()
        res.analysis = run_analyses(mat, out, k=k, seed=params.seed, emit=emit)
        timings["analysis"] = time.perf_counter() - t0
    res.seconds = timings
    return res


def _add_report(res: StudyResult, rep: JobReport) -> None:
    res.model_loads += rep.model_loads
    res.forward_samples += rep.forward_samples
    res.jobs.append(rep)
    if rep.kind == "attack":
        res.attack_stats[rep.name] = rep.stats
        if rep.ran:
            res.attacks_run += 1
        else:
            res.attacks_skipped += 1
    else:
        res.transfer_evaluations += rep.evaluations
        res.transfer_skipped += rep.reused


@dataclass
class StudyAnalysis:
    clusters: Any  # ClusterResult
    keywords: pl.DataFrame
    importance: Any  # ImportanceResult, or None when it could not be fitted (see note)
    missing_cards: list[str]
    note: str = ""
    ensembles: Any = None  # EnsembleReport


def run_analyses(mat: SatMatrix, out: Path, *, k: int | None = None, seed: int = 0, emit=None) -> StudyAnalysis:
    """Cluster + TF-IDF keywords + component importance on the study's matrix, tables and plots into ``out``."""
    from satkit.cards import load_cards
    from satkit.analysis.cluster import plot_spectral_distances, plot_tsne, spectral_cluster, tfidf_keywords
    from satkit.analysis.importance import feature_importance, plot_importance

    emit = emit or (lambda e: None)
    cards = load_cards()
    cl = spectral_cluster(mat.names, mat.values, k, seed=seed)
    kw, missing = tfidf_keywords(cl.labels, cl.names, cards, top=5)
    write_table(cl.to_frame(), out / "clusters.csv")
    write_table(kw, out / "keywords.csv")
    plot_spectral_distances(cl, out / "clusters.png")
    plot_tsne(cl, out / "tsne.png", seed=seed)
    emit(StudyEvent("analysis", "clusters", 1, 2))
    imp, note = None, ""
    try:
        imp = feature_importance(mat.names, mat.values, cards, seed=seed)
    except SatkitError as e:  # e.g. too few pairs with cards: the clustering still stands
        note = f"importance skipped: {e}"
    if imp is not None:
        write_table(imp.to_frame(), out / "importance.csv")
        plot_importance(imp, out / "importance.png")
    emit(StudyEvent("analysis", "importance", 2, 3))
    ens = _ensembles(mat, cl, out, seed)
    emit(StudyEvent("analysis", "ensembles", 3, 3))
    return StudyAnalysis(clusters=cl, keywords=kw, importance=imp, missing_cards=missing, note=note, ensembles=ens)


def _ensembles(mat: SatMatrix, cl, out: Path, seed: int):
    """Logit-averaging ensembles of the study's models: ERR vs SAT, the cluster grid (paper Table 3)."""
    from satkit.analysis.ensemble import analyze_ensembles, plot_sat_vs_err
    from satkit.logits import open_logits_files

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


@dataclass
class StudyPlan:
    """What a study will cost, before anything runs (``satkit study --plan``)."""

    models: int
    samples: int
    steps: int
    attacks: int  # attack jobs still to run
    attacks_done: int
    transfer_evaluations: int  # (source, target) pairs still to evaluate
    transfer_done: int
    attack_forward_backward: int  # PGD passes: samples * steps per attack
    attack_forward: int  # clean + stored-adversarial check: 2 * samples per attack
    transfer_forward_max: int  # adversarial forwards; the real count is sum |X_AB| <= samples per pair
    model_loads: int

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("models", f"{self.models}"),
            ("samples", f"{self.samples}"),
            ("attacks to run", f"{self.attacks} ({self.attacks_done} already done)"),
            ("transfer evaluations to run", f"{self.transfer_evaluations} ({self.transfer_done} already done)"),
            ("PGD forward+backward passes (images)", f"{self.attack_forward_backward:,}"),
            ("attack forward passes (images)", f"{self.attack_forward:,}"),
            ("transfer forward passes (images, at most)", f"{self.transfer_forward_max:,}"),
            ("model loads", f"{self.model_loads}"),
        ]


def count_samples(data: str, n: int | None) -> int:
    """Sample count of a data source without decoding any image."""
    from satkit.data.loaders import _list_folder, digits_split

    if data == "digits" or data.startswith("digits:"):
        tr, te = digits_split()
        split = data.split(":", 1)[1] if ":" in data else "test"
        total = {"test": len(te), "train": len(tr)}.get(split, len(tr) + len(te))
    elif Path(data).is_dir():
        total = len(_list_folder(Path(data))[0])
    else:
        total = len(load_data(data))
    return min(total, n) if n else total


def plan_study(models: list[str] | None, *, data: str = "digits", out_dir: str | Path | None = None,
               params: AttackParams | None = None, n: int | None = None,
               model_options: ModelOptions | None = None) -> StudyPlan:
    """Count the work of :func:`run_study` (minus what ``out_dir`` already holds) without running it."""
    from satkit.models.registry import model_display_name

    models = list(models) if models else default_models()
    params = params or AttackParams(eps=DIGITS_EPS if data.startswith("digits") else 8 / 255)
    samples = count_samples(data, n)
    done_attacks: set[str] = set()
    done_pairs = 0
    if out_dir is not None and Path(out_dir).exists():
        out = Path(out_dir)
        keys = {}
        for spec in models:
            path = out / "attacks" / f"{slug(spec)}.safetensors"
            try:
                p = read_satkit_file(path, "satkit.attack").provenance if path.exists() else None
            except SatkitError:
                p = None
            if (p and p.get("attack") == params.to_dict() and p.get("model", {}).get("name") == model_display_name(spec, model_options)
                    and p.get("model", {}).get("weights_id") == expected_weights_id(spec, model_options)):
                done_attacks.add(spec)
                keys[p["attack_key"]] = spec
        for spec in models:
            old = _read_existing_transfer(out / "transfer" / f"{slug(spec)}.csv", model_display_name(spec, model_options),
                                          expected_weights_id(spec, model_options))
            if old is not None:
                done_pairs += sum(1 for k in old["attack_key"].to_list() if k in keys)
    todo_attacks = len(models) - len(done_attacks)
    todo_pairs = len(models) ** 2 - done_pairs
    targets_to_load = len(models) if todo_pairs else 0
    return StudyPlan(
        models=len(models), samples=samples, steps=params.steps,
        attacks=todo_attacks, attacks_done=len(done_attacks),
        transfer_evaluations=todo_pairs, transfer_done=done_pairs,
        attack_forward_backward=todo_attacks * samples * params.steps,
        attack_forward=todo_attacks * samples * 2,
        transfer_forward_max=todo_pairs * samples,
        model_loads=todo_attacks + targets_to_load,
    )


def _remove_stale_partials(out: Path) -> None:
    """Temporary files of a killed run (never under a final name) are cleaned up on the next run."""
    for d in (out, out / "attacks", out / "transfer"):
        for p in d.glob(".*.partial"):
            try:
                p.unlink()
            except OSError:
                pass


def _ensure_zoo(models: list[str], emit) -> None:
    from satkit.models import zoo

    missing = [m.removeprefix("digits/") for m in models if m.startswith("digits/") and m.removeprefix("digits/") in zoo.ZOO_MODELS and zoo.find_weights(m.removeprefix("digits/")) is None]
    if not missing:
        return
    for i, name in enumerate(missing):
        emit(StudyEvent("zoo", f"digits/{name}", i, len(missing)))
        zoo.train_zoo([name])
        emit(StudyEvent("zoo", f"digits/{name}", i + 1, len(missing)))


def _write_settings(out: Path, models, data, params, n, data_seed, canvas, eps_s, clean: CleanSet) -> None:
    settings = {
        "models": models, "data": data, "n": n, "data_seed": data_seed, "canvas": canvas,
        "attack": params.to_dict(), "eps_s": eps_s, "fingerprint": clean.fingerprint,
    }
    with atomic_output(out / "study.json") as tmp:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def shard_share(models: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The models shard ``i`` of ``n`` attacks and evaluates as a target: every n-th, starting at i (0-based)."""
    if shard is None:
        return list(models)
    i, n = shard
    if n <= 0 or not 0 <= i < n:
        raise SatkitError(f"--shard {i}/{n}: need 0 <= i < n (shards are numbered from 0, e.g. 0/4 .. 3/4)")
    return [m for j, m in enumerate(models) if j % n == i]


def _logits_all(models, attack_paths, out: Path) -> None:
    """logits/<model>.safetensors from each attack file's stored clean logits (no model run), for ensembles."""
    from satkit.logits import logits_from_attack, save_logits

    (out / "logits").mkdir(exist_ok=True)
    for spec in models:
        path = out / "logits" / f"{slug(spec)}.safetensors"
        key = read_satkit_file(attack_paths[spec], "satkit.attack").provenance.get("attack_key")
        if path.exists():
            try:
                if read_satkit_file(path, "satkit.logits").provenance.get("from_attack") == key:
                    continue
            except SatkitError:
                pass
        save_logits(logits_from_attack(attack_paths[spec]), path)


def _read_existing_transfer(path: Path, target_name: str, weights_id: str | None = None) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = read_table(path, "transfer table")
    except SatkitError:
        return None
    if not set(TRANSFER_SCHEMA).issubset(df.columns) or (df.height and set(df["target"].to_list()) != {target_name}):
        return None
    if weights_id is None or (df.height and set(df["target_weights_id"].to_list()) != {weights_id}):
        return None  # the target's weights changed (or cannot be told): evaluate again
    return df.select(list(TRANSFER_SCHEMA)).cast(TRANSFER_SCHEMA)  # type: ignore[arg-type]


def _read_existing_samples(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = read_table(path, "per-sample table")
    except SatkitError:
        return None
    return df if "attack_key" in df.columns else None
