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

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from satkit.analysis.cluster import spectral_cluster
from satkit.attacks.base import AttackParams
from satkit.data import DataRequest
from satkit.errors import MismatchError, ParameterError
from satkit.jobs import DEFAULT_BATCH_SIZE, AttackJob, attack_into_file, evaluate_target
from satkit.matrix.sat import DEFAULT_EPS_S, check_eps_s, sat_value
from satkit.models.registry import ModelOptions, model_display_name
from satkit.settings import CI_LEVEL, CLUSTER_METHOD, N_BOOT
from satkit.transfer import open_attack_files

EventFn = Callable[[str, str, int, int], None]
"""``on_event(stage, model, done, total)``: stage ``attack`` counts samples, ``transfer`` counts known models."""

APPROX_SCHEMA = {
    "model": pl.Utf8, "cluster": pl.Int64, "kind": pl.Utf8, "n_both": pl.Int64, "n_fooled": pl.Int64,
    "fool_rate": pl.Float64, "sat_approx": pl.Float64, "n_fooled_new": pl.Int64, "sat": pl.Float64,
}
"""One row per known model B. ``n_fooled``: #X_NB with B(x_N) != y; ``sat_approx``: the one-sided G.1 value.
``kind`` is ``exact`` when B's own attack file was also evaluated on N (``n_fooled_new``: #X_NB with
N(x_B) != y), which gives ``sat``, the full SAT(N, B) the study would compute; else ``one-sided``."""

EXACT, ONE_SIDED = "exact", "one-sided"


@dataclass
class Outcomes:
    """Per-sample outcomes of one known model B against N, in the clean set's order (for the margin's interval)."""

    both: np.ndarray  # bool: N and B both right on the clean image (X_NB)
    fooled_known: np.ndarray  # bool: B(x_N) != y on X_NB
    fooled_new: np.ndarray | None = None  # bool: N(x_B) != y on X_NB (exact rows only)


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
    cluster_method: str | None = None
    exact: bool = False  # every row exact: the placement uses SAT, else SAT_approx
    forward_samples_new: int = 0  # images pushed through N over the known models' adversarials (exact rows)
    margin_ci: tuple[float, float] | None = None  # bootstrap interval of the margin (images resampled)
    margin_level: float | None = None
    outcomes: dict[str, Outcomes] = field(default_factory=dict, repr=False)
    also: dict[str, dict[str, Any]] = field(default_factory=dict)  # further placements (e.g. the released SAT matrix's clusters)
    known_names: dict[str, str] = field(default_factory=dict)  # known set: card name -> the timm name it ran as

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
            "runner_up": self.runner_up, "margin": self.margin, "cluster_method": self.cluster_method,
            "exact": self.exact, "forward_samples_new_model": self.forward_samples_new,
            "margin_ci": list(self.margin_ci) if self.margin_ci is not None else None, "margin_level": self.margin_level,
            "cluster_scores": {str(k): v for k, v in self.cluster_scores.items()},
            "rows": self.rows.to_dicts(), "warnings": self.warnings,
            **({"also": self.also} if self.also else {}),
            **({"known_names": self.known_names} if self.known_names else {}),
        }

    def placement(self) -> dict[str, Any]:
        """The cluster N joins, as a plain dict (for :attr:`also`)."""
        return {"cluster_method": self.cluster_method, "k": self.k, "joined": self.joined,
                "joined_members": self.members(self.joined) if self.joined is not None else None,
                "runner_up": self.runner_up, "margin": self.margin,
                "margin_ci": list(self.margin_ci) if self.margin_ci is not None else None,
                "cluster_scores": {str(k): v for k, v in self.cluster_scores.items()}}


def approx_rows(
    new_attack,  # SatkitFile of N's attack (opened with open_attack_files)
    known: Sequence[str],
    *,
    own_attacks: dict[str, Any] | None = None,  # known spec -> SatkitFile of its own attack (clean correctness)
    eps_s: float = DEFAULT_EPS_S,
    model_options: ModelOptions | None = None,
    device: Any = "cpu",
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    amp: str = "off",
    on_event: EventFn | None = None,
    outcomes: dict[str, Outcomes] | None = None,
) -> tuple[pl.DataFrame, int, list[str]]:
    """Evaluate every known model on N's adversarials (:func:`satkit.jobs.evaluate_target`); one row per known model.

    With ``outcomes`` (a dict to fill), each model's per-sample outcomes are kept under its name.
    """
    rows, fwd, warnings = [], 0, []
    emit = on_event or (lambda *a: None)
    for i, spec in enumerate(known):
        emit("transfer", spec, i, len(known))
        own = (own_attacks or {}).get(spec)
        o = evaluate_target(spec, [new_attack], model_options=model_options, device=device, batch_size=batch_size,
                            amp=amp, own_attack=own, per_sample=outcomes is not None)
        if outcomes is not None:
            ps = o.result.per_sample[0]
            both = ps["source_correct"].to_numpy() & ps["target_correct"].to_numpy()
            outcomes[o.name] = Outcomes(both=both, fooled_known=ps["fooled"].to_numpy())
        if own is not None and not o.own_attack_used:
            warnings.append(f"{o.name}: weights differ from the ones its study attack file was made with; "
                            "using a clean forward pass instead")
        fwd += o.result.forward_samples
        r = o.result.rows[0]
        nb, nf = int(r["n_both"]), int(r["n_fooled"])
        rows.append({
            "model": o.name, "cluster": None, "kind": ONE_SIDED, "n_both": nb, "n_fooled": nf,
            "fool_rate": nf / nb if nb else None,
            "sat_approx": (sat_value(nf, nf, nb, eps_s) if nb else None), "n_fooled_new": None, "sat": None,
        })
        if nb == 0:
            warnings.append(f"X_NB is empty for {o.name}: no sample both classify correctly; SAT_approx left empty")
        emit("transfer", spec, i + 1, len(known))
    return pl.DataFrame(rows, schema=APPROX_SCHEMA), fwd, warnings


def exact_rows(
    new: str,
    new_attack,  # SatkitFile of N's attack
    known_attacks: dict[str, Any],  # known model's display name -> SatkitFile of its current attack in the study
    rows: pl.DataFrame,
    *,
    eps_s: float,
    outcomes: dict[str, Outcomes],
    model_options: ModelOptions | None = None,
    device: Any = "cpu",
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    amp: str = "off",
    on_event: EventFn | None = None,
) -> tuple[pl.DataFrame, int, list[str]]:
    """The B -> N direction for every known model whose attack file is given: N is loaded once and evaluated
    on each file's adversarial X_NB (N's clean correctness from its own attack file), which turns those rows
    into the full SAT(N, B): the value a study holding N would compute, from the same counts.
    """
    if not known_attacks:
        return rows, 0, []
    emit = on_event or (lambda *a: None)
    names = list(known_attacks)
    emit("exact", new, 0, len(names))
    o = evaluate_target(new, [known_attacks[m] for m in names], model_options=model_options, device=device,
                        batch_size=batch_size, amp=amp, own_attack=new_attack, per_sample=True)
    emit("exact", new, len(names), len(names))
    warnings = [] if o.own_attack_used else [f"{o.name}: weights differ from its attack file's; clean pass used"]
    back = {r["source"]: (int(r["n_both"]), int(r["n_fooled"])) for r in o.result.rows}
    for ps in o.result.per_sample:
        src = ps["source"][0]
        if src in outcomes:
            outcomes[src].fooled_new = ps["fooled"].to_numpy()
    out = []
    for r in rows.iter_rows(named=True):
        b = back.get(r["model"])
        if b is not None and b[0] != r["n_both"]:  # both directions read X_NB from the same clean correctness
            raise MismatchError(f"{r['model']}: X_NB has {r['n_both']} samples one way and {b[0]} the other; "
                                "the study's attack files disagree with the new model's")
        if b is not None:
            nb, back_fooled = b
            r = dict(r, kind=EXACT, n_fooled_new=back_fooled,
                     sat=sat_value(r["n_fooled"], back_fooled, nb, eps_s) if nb else None)
        out.append(r)
    return pl.DataFrame(out, schema=APPROX_SCHEMA), o.result.forward_samples, warnings


def margin_interval(result: ApproxResult, level: float = CI_LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> None:
    """Bootstrap interval of the margin (joined cluster's mean score minus the runner-up's), images resampled.

    Each resample draws the clean set's images with replacement, the same draw for every row (as the
    study's ``--ci``), recomputes each row's score (SAT when the placement is exact, else SAT_approx) from
    the drawn counts, and the two clusters' means; the interval is the resamples' percentile interval.
    An interval that holds 0 says the placement is a coin toss between the two clusters.
    """
    if result.joined is None or result.runner_up is None or not result.outcomes:
        return
    labels = dict(zip(result.cluster_names or [], (int(c) for c in (result.cluster_labels if result.cluster_labels is not None else []))))
    rng = np.random.default_rng(seed)
    any_o = next(iter(result.outcomes.values()))
    n = len(any_o.both)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (B, n) draw counts
    eps_s = result.eps_s
    per_cluster: dict[int, list[np.ndarray]] = {result.joined: [], result.runner_up: []}
    for name, o in result.outcomes.items():
        c = labels.get(name)
        if c not in per_cluster:
            continue
        nb = W @ o.both
        fa = W @ (o.both & o.fooled_known)
        fb = W @ (o.both & o.fooled_new) if result.exact and o.fooled_new is not None else fa
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.log(np.maximum(eps_s, 100.0 * (fa + fb) / (2.0 * nb)))
        score[nb == 0] = np.nan
        per_cluster[c].append(score)
    if not per_cluster[result.joined] or not per_cluster[result.runner_up]:
        return
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where a cluster has no scored member: NaN
        diff = np.nanmean(np.stack(per_cluster[result.joined]), 0) - np.nanmean(np.stack(per_cluster[result.runner_up]), 0)
    diff = diff[np.isfinite(diff)]
    if len(diff) == 0:
        return
    a = (1 - level) / 2
    result.margin_ci = (float(np.quantile(diff, a)), float(np.quantile(diff, 1 - a)))
    result.margin_level = level


def assign_cluster(result: ApproxResult, names: list[str], S: np.ndarray, k: int | None, seed: int = 0,
                   method: str = CLUSTER_METHOD) -> None:
    """Cluster (names, S) and put N into the cluster with the highest mean score (fills ``result``).

    The score is SAT when every row is exact (``result.exact``), else SAT_approx.
    """
    cl = spectral_cluster(names, S, k, seed=seed, method=method)
    result.cluster_method = method
    result.k_from_eigengap = cl.k_from_eigengap
    _join(result, list(cl.names), cl.labels, cl.k)


def assign_given(result: ApproxResult, labels: dict[str, int], source: str, k: int | None = None) -> None:
    """Put N into one of given clusters (e.g. the paper's Table 1): the cluster with the highest mean score.

    ``labels``: known model -> cluster id (1..k, ``k`` the largest id unless given); ``source`` names where the ids
    come from (``cluster_method``).
    The same rule as :func:`assign_cluster`, without clustering a matrix.
    """
    names = list(labels)
    result.cluster_method = source
    result.k_from_eigengap = False
    _join(result, names, np.array([int(labels[n]) for n in names]), k or max(labels.values(), default=0))


def _join(result: ApproxResult, names: list[str], labels: np.ndarray, k: int) -> None:
    label_of = dict(zip(names, (int(v) for v in labels)))
    result.cluster_names, result.cluster_labels = names, labels
    result.k = k
    rows = result.rows.with_columns(pl.Series("cluster", [label_of.get(m) for m in result.rows["model"].to_list()], dtype=pl.Int64))
    result.rows = rows
    col = "sat" if result.exact else "sat_approx"
    scores: dict[int, float] = {}
    for c in range(1, k + 1):
        vals = rows.filter((pl.col("cluster") == c) & pl.col(col).is_not_null())[col].to_list()
        if vals:
            scores[c] = float(np.mean(vals))
    not_scored = [c for c in range(1, k + 1) if c not in scores]
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


def approx_explicit(
    new: str,
    known: Sequence[str],
    data: DataRequest,
    params: AttackParams,
    *,
    eps_s: float = DEFAULT_EPS_S,
    sat: tuple[list[str], np.ndarray] | None = None,
    k: int | None = None,
    seed: int = 0,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    device: Any = "cpu",
    amp: str = "off",
    model_options: ModelOptions | None = None,
    known_options: ModelOptions | None = None,
    save_attack_to: str | Path | None = None,
    on_event: EventFn | None = None,
) -> ApproxResult:
    """Approximate SAT of model ``new`` against an explicit list of known models (no study; clean passes needed)."""
    check_eps_s(eps_s)
    name = model_display_name(new, model_options)
    known = [m for m in known if model_display_name(m, known_options) != name]
    if not known:
        raise ParameterError("give at least one known model other than the new one (--models)")
    if len(set(known)) != len(known):
        raise ParameterError("--models names a model twice")
    emit = on_event or (lambda *a: None)
    with tempfile.TemporaryDirectory(prefix="satkit-approx-") as tmp:
        path = Path(save_attack_to) if save_attack_to is not None else Path(tmp) / "new.safetensors"
        job = AttackJob(new, data=data, params=params, model_options=model_options, batch_size=batch_size, amp=amp)
        a = attack_into_file(job, path, device=device, progress=lambda d, t: emit("attack", name, d, t))
        new_file = open_attack_files([str(path)])[0]
        outcomes: dict[str, Outcomes] = {}
        rows, fwd, w = approx_rows(new_file, known, eps_s=eps_s, model_options=known_options, device=device,
                                   batch_size=batch_size, amp=amp, on_event=on_event, outcomes=outcomes)
    res = ApproxResult(model=a.name, rows=rows, eps_s=eps_s, attack_stats=a.stats, forward_samples=fwd,
                       attack_forward_samples=a.forward_samples, warnings=w, outcomes=outcomes)
    if sat is not None:
        names, S = sat
        keep = [i for i, n in enumerate(names) if n != a.name]
        assign_cluster(res, [names[i] for i in keep], np.asarray(S, dtype=float)[np.ix_(keep, keep)], k, seed)
    return res
