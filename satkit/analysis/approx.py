"""One-sided SAT of a new model against known models (paper appendix G.1).

Full SAT of a new model N against a known model B needs both directions: N's
adversarials on B *and* B's adversarials on N, i.e. an attack on every known
model plus N evaluated on all of them. The approximation of appendix G.1 drops
the second direction ("omitting to compute the accuracy of the novel network on
the adversarial samples of the existing networks")::

    SAT_approx(N, B) = ln( max( eps_s, 100 / |X_NB| * sum_{x in X_NB} 1(B(x_N) != y) ) )

with X_NB the samples N and B both classify correctly when clean, x_N the
adversarial example made on N, ``eps_s`` the study's floor (percent), natural
log -- exactly :func:`satkit.matrix.sat.sat_value` with both directions set
to the same count. It is not symmetric; the paper reports 0.82 Pearson
correlation between approximate and full scores.

Cost: one attack (on N) plus, per known model B, one forward pass of B over
the adversarial X_NB samples. B's clean correctness comes from B's own attack
file in the study (``source_correct``), so no clean forward pass is needed; N's
comes from its attack. Without a study (explicit ``--models``), each B also
runs once over the clean images.

Cluster assignment: the study's SAT matrix (without N, if N is part of it) is
clustered with :func:`satkit.analysis.cluster.spectral_cluster` (``k`` given,
or by eigengap); N joins the cluster whose members have the highest mean
SAT_approx to N; the margin is that mean minus the runner-up cluster's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from satkit.matrix.sat import DEFAULT_EPS_S, sat_value
from satkit.attacks.base import AttackParams
from satkit.errors import InputFileError, MismatchError, ParameterError
from satkit.models.registry import ModelOptions, model_display_name
from satkit.models.wrapper import LoadedModel

EventFn = Callable[[str, str, int, int], None]
"""``on_event(stage, model, done, total)``: stage ``attack`` counts samples, ``transfer`` counts known models."""

APPROX_SCHEMA = {
    "model": pl.Utf8, "cluster": pl.Int64, "n_both": pl.Int64, "n_fooled": pl.Int64,
    "fool_rate": pl.Float64, "sat_approx": pl.Float64,
}


@dataclass
class StudySettings:
    dir: Path
    models: list[str]
    data: str
    n: int | None
    data_seed: int
    canvas: int | None
    attack: dict[str, Any]
    eps_s: float
    fingerprint: str

    def params(self) -> AttackParams:
        a = self.attack
        try:
            return AttackParams(eps=float(a["eps"]), steps=int(a["steps"]), step_size=float(a["step_size"]),
                                random_start=bool(a["random_start"]), seed=int(a["seed"]), attack=str(a["attack"]),
                                storage=str(a["storage"]))
        except (KeyError, TypeError, ValueError):
            raise InputFileError(f"{self.dir / 'study.json'}: attack settings are incomplete; rerun satkit study") from None

    def attack_path(self, spec: str) -> Path:
        from satkit.study import slug

        return self.dir / "attacks" / f"{slug(spec)}.safetensors"


def read_study(study_dir: str | Path) -> StudySettings:
    d = Path(study_dir)
    p = d / "study.json"
    if not d.is_dir():
        raise InputFileError(f"{d}: no such study directory; run `satkit study -o {d}` first")
    if not p.is_file():
        raise InputFileError(f"{d}: not a study directory (no study.json); run `satkit study -o {d}` first")
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
        return StudySettings(
            dir=d, models=list(s["models"]), data=str(s["data"]), n=s.get("n"), data_seed=int(s.get("data_seed", 0)),
            canvas=s.get("canvas"), attack=dict(s["attack"]), eps_s=float(s.get("eps_s", DEFAULT_EPS_S)),
            fingerprint=str(s["fingerprint"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise InputFileError(f"{p}: not a valid study.json; rerun satkit study") from None


@dataclass
class ApproxResult:
    model: str
    rows: pl.DataFrame  # one row per known model
    eps_s: float
    attack_reused: bool = False
    attack_stats: dict[str, Any] = field(default_factory=dict)
    forward_samples: int = 0  # images pushed through known models (clean + adversarial)
    attack_forward_samples: int = 0  # images pushed through N by the attack (0 when reused)
    cluster_names: list[str] | None = None
    cluster_labels: np.ndarray | None = None
    k: int | None = None
    k_from_eigengap: bool = False
    cluster_scores: dict[int, float] = field(default_factory=dict)  # cluster -> mean SAT_approx of its members
    joined: int | None = None
    runner_up: int | None = None
    margin: float | None = None
    warnings: list[str] = field(default_factory=list)

    def members(self, cluster: int) -> list[str]:
        if self.cluster_labels is None or self.cluster_names is None:
            return []
        return sorted(n for n, c in zip(self.cluster_names, self.cluster_labels) if int(c) == cluster)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model, "eps_s": self.eps_s, "attack_reused": self.attack_reused,
            "forward_samples_known_models": self.forward_samples, "attack_forward_samples": self.attack_forward_samples,
            "k": self.k, "k_from_eigengap": self.k_from_eigengap, "joined": self.joined,
            "joined_members": self.members(self.joined) if self.joined is not None else None,
            "runner_up": self.runner_up, "margin": self.margin,
            "cluster_scores": {str(k): v for k, v in self.cluster_scores.items()},
            "rows": self.rows.to_dicts(), "warnings": self.warnings,
        }


def approx_rows(
    new: LoadedModel,
    new_attack,  # SatkitFile of N's attack
    known: Sequence[str],
    *,
    own_attacks: dict[str, Any] | None = None,  # known spec -> SatkitFile of its own attack (clean correctness)
    eps_s: float = DEFAULT_EPS_S,
    model_options: ModelOptions | None = None,
    device: Any = "cpu",
    batch_size: int = 128,
    amp: str = "off",
    on_event: EventFn | None = None,
) -> tuple[pl.DataFrame, int, list[str]]:
    """Evaluate every known model on N's adversarials (via :func:`run_transfer`); one row per known model."""
    from satkit.transfer import run_transfer
    from satkit.models import load_model

    rows, fwd, warnings = [], 0, []
    emit = on_event or (lambda *a: None)
    for i, spec in enumerate(known):
        emit("transfer", spec, i, len(known))
        lm = load_model(spec, model_options, device)
        own = (own_attacks or {}).get(spec)
        if own is not None and own.provenance.get("model", {}).get("weights_id") != lm.weights_id:
            warnings.append(f"{lm.name}: weights differ from the ones its study attack file was made with; using a clean forward pass instead")
            own = None
        tr = run_transfer(lm, [new_attack], batch_size=batch_size, amp=amp, own_attack=own)
        fwd += tr.forward_samples
        r = tr.rows[0]
        nb, nf = int(r["n_both"]), int(r["n_fooled"])
        rows.append({
            "model": lm.name, "cluster": None, "n_both": nb, "n_fooled": nf,
            "fool_rate": nf / nb if nb else None,
            "sat_approx": (sat_value(nf, nf, nb, eps_s) if nb else None),
        })
        if nb == 0:
            warnings.append(f"X_NB is empty for {lm.name}: no sample both classify correctly; SAT_approx left empty")
        del lm
        emit("transfer", spec, i + 1, len(known))
    return pl.DataFrame(rows, schema=APPROX_SCHEMA), fwd, warnings


def _attack_new(new: LoadedModel, clean, params: AttackParams, path: Path, batch_size: int, amp: str, on_event: EventFn | None):
    from satkit.attacks import run_attack, save_attack

    emit = on_event or (lambda *a: None)
    res = run_attack(new, clean, params, batch_size=batch_size, amp=amp, progress=lambda d, t: emit("attack", new.name, d, t))
    save_attack(res, path)
    return res.provenance.get("stats", {})


def _matching_attack(path: Path, new: LoadedModel, params: AttackParams, fingerprint: str):
    """The study's attack file of N when it was made with the same weights, attack and clean set, else None."""
    from satkit.errors import SatkitError
    from satkit.io.tensorfile import read_satkit_file

    if not path.is_file():
        return None
    try:
        f = read_satkit_file(path, "satkit.attack")
    except SatkitError:
        return None
    p = f.provenance
    ok = (p.get("model", {}).get("name") == new.name and p.get("model", {}).get("weights_id") == new.weights_id
          and p.get("attack") == params.to_dict() and p.get("data", {}).get("fingerprint") == fingerprint)
    return f if ok else None


def assign_cluster(result: ApproxResult, names: list[str], S: np.ndarray, k: int | None, seed: int = 0) -> None:
    """Cluster (names, S) and put N into the cluster with the highest mean SAT_approx (fills ``result``)."""
    from satkit.analysis.cluster import spectral_cluster

    cl = spectral_cluster(names, S, k, seed=seed)
    label_of = dict(zip(cl.names, (int(v) for v in cl.labels)))
    result.cluster_names, result.cluster_labels = list(cl.names), cl.labels
    result.k, result.k_from_eigengap = cl.k, cl.k_from_eigengap
    rows = result.rows.with_columns(pl.Series("cluster", [label_of.get(m) for m in result.rows["model"].to_list()], dtype=pl.Int64))
    result.rows = rows
    scores: dict[int, float] = {}
    for c in range(1, cl.k + 1):
        vals = rows.filter((pl.col("cluster") == c) & pl.col("sat_approx").is_not_null())["sat_approx"].to_list()
        if vals:
            scores[c] = float(np.mean(vals))
    not_scored = [c for c in range(1, cl.k + 1) if c not in scores]
    if not_scored:
        result.warnings.append(f"cluster(s) {', '.join(map(str, not_scored))} have no member with an approximate SAT; N cannot join them")
    if not scores:
        result.warnings.append("no known model of the SAT matrix has an approximate SAT; no cluster assignment")
        return
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    result.cluster_scores = scores
    result.joined = ranked[0][0]
    if len(ranked) > 1:
        result.runner_up = ranked[1][0]
        result.margin = ranked[0][1] - ranked[1][1]


def approx_from_study(
    new: LoadedModel,
    study_dir: str | Path,
    *,
    k: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: Any = "cpu",
    amp: str = "off",
    model_options: ModelOptions | None = None,
    save_attack_to: str | Path | None = None,
    reuse_attack: bool = True,
    on_event: EventFn | None = None,
) -> ApproxResult:
    """Approximate SAT of ``new`` against every other model of a study, and the cluster it joins.

    The clean set and attack settings are the study's (``study.json``); the data
    must reproduce the study's fingerprint. If the study already holds an attack
    file of ``new`` made with the same weights and settings (a leave-one-out
    check), it is reused unless ``reuse_attack`` is False.
    """
    from satkit.matrix.square import read_similarity_matrix
    from satkit.transfer import open_attack_files
    from satkit.data import load_data

    st = read_study(study_dir)
    params = st.params()
    known = [m for m in st.models if model_display_name(m) != new.name]
    if not known:
        raise ParameterError(f"the study in {st.dir} holds no model other than {new.name}; nothing to compare with")
    missing = [m for m in known if not st.attack_path(m).is_file()]
    if missing:
        raise InputFileError(f"{st.dir}: attack files missing for {', '.join(missing[:5])}; rerun `satkit study -o {st.dir}` to finish it")
    own_files = open_attack_files([str(st.attack_path(m)) for m in known])
    for f in own_files:
        if f.provenance["data"]["fingerprint"] != st.fingerprint:
            raise MismatchError(f"{f.path} was made from another clean set than {st.dir / 'study.json'} says; rerun satkit study")
    own = dict(zip(known, own_files))
    warnings: list[str] = []
    if len(known) < len(st.models):
        warnings.append(f"{new.name} is part of the study: it is left out of the known models and of the clustering")

    with tempfile.TemporaryDirectory(prefix="satkit-approx-") as tmp:
        reused = _matching_attack(st.attack_path(next(m for m in st.models if model_display_name(m) == new.name)), new, params, st.fingerprint) \
            if reuse_attack and len(known) < len(st.models) else None
        attack_fwd = 0
        if reused is not None:
            new_file, stats = reused, reused.provenance.get("stats", {})
        else:
            clean = load_data(st.data, canvas=st.canvas, n=st.n, seed=st.data_seed)
            if clean.fingerprint != st.fingerprint:
                raise MismatchError(
                    f"--data {st.data} no longer gives the study's clean set (fingerprint {clean.fingerprint[:8]} vs "
                    f"{st.fingerprint[:8]}); the data changed since the study was made"
                )
            path = Path(save_attack_to) if save_attack_to is not None else Path(tmp) / "new.safetensors"
            stats = _attack_new(new, clean, params, path, batch_size, amp, on_event)
            attack_fwd = len(clean) * (params.steps + 2)
            new_file = open_attack_files([str(path)])[0]
        rows, fwd, w = approx_rows(new, new_file, known, own_attacks=own, eps_s=st.eps_s, model_options=model_options,
                                   device=device, batch_size=batch_size, amp=amp, on_event=on_event)
    warnings += w
    res = ApproxResult(model=new.name, rows=rows, eps_s=st.eps_s, attack_reused=reused is not None, attack_stats=stats,
                       forward_samples=fwd, attack_forward_samples=attack_fwd, warnings=warnings)
    sat_path = st.dir / "sat.csv"
    if not sat_path.is_file():
        res.warnings.append(f"{sat_path} is missing: no cluster assignment (finish the study first)")
        return res
    names, S = read_similarity_matrix(sat_path)
    keep = [i for i, n in enumerate(names) if n != new.name]
    names, S = [names[i] for i in keep], S[np.ix_(keep, keep)]
    assign_cluster(res, names, S, k, seed)
    return res


def approx_explicit(
    new: LoadedModel,
    known: Sequence[str],
    clean,
    params: AttackParams,
    *,
    eps_s: float = DEFAULT_EPS_S,
    sat: tuple[list[str], np.ndarray] | None = None,
    k: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: Any = "cpu",
    amp: str = "off",
    model_options: ModelOptions | None = None,
    save_attack_to: str | Path | None = None,
    on_event: EventFn | None = None,
) -> ApproxResult:
    """Approximate SAT of ``new`` against an explicit list of known models (no study; clean passes needed)."""
    from satkit.transfer import open_attack_files

    if eps_s <= 0:
        raise ParameterError(f"--eps-s must be positive, got {eps_s}")
    known = [m for m in known if model_display_name(m, None) != new.name]
    if not known:
        raise ParameterError("give at least one known model other than the new one (--models)")
    if len(set(known)) != len(known):
        raise ParameterError("--models names a model twice")
    with tempfile.TemporaryDirectory(prefix="satkit-approx-") as tmp:
        path = Path(save_attack_to) if save_attack_to is not None else Path(tmp) / "new.safetensors"
        stats = _attack_new(new, clean, params, path, batch_size, amp, on_event)
        new_file = open_attack_files([str(path)])[0]
        rows, fwd, w = approx_rows(new, new_file, known, eps_s=eps_s, model_options=model_options, device=device,
                                   batch_size=batch_size, amp=amp, on_event=on_event)
    res = ApproxResult(model=new.name, rows=rows, eps_s=eps_s, attack_stats=stats, forward_samples=fwd,
                       attack_forward_samples=len(clean) * (params.steps + 2), warnings=w)
    if sat is not None:
        names, S = sat
        keep = [i for i, n in enumerate(names) if n != new.name]
        assign_cluster(res, [names[i] for i in keep], np.asarray(S, dtype=float)[np.ix_(keep, keep)], k, seed)
    return res
