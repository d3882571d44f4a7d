"""Known sets for ``satkit approx --known``: the paper's 69 ImageNet models, resolved in the installed timm.

``paper69`` is the paper's set: the 69 card names (``satkit/cards/paper69.csv``, timm 0.6.7 names) and the
cluster each is in in the paper's Table 1 (``satkit/cards/paper69_table1.csv``, transcribed from the paper).
A card name becomes a name today's timm can build, decided by the installed timm alone (no network):

1. a current timm architecture: the name itself (timm loads its default weights tag);
2. a name in timm's own deprecation table (``timm.models.get_deprecated_models``): timm's current name
   (``gluon_resnet101_v1c`` -> ``resnet101c.gluon_in1k``, ``jx_nest_tiny`` -> ``nest_tiny_jx``);
3. a name timm no longer knows at all: satkit's alias table (:data:`satkit.cards.ALIASES`), when the
   alias is a model of the installed timm with those weights;
4. otherwise the name is missing, with the reason; it is reported before any work and left out.

The resolved name must also have pretrained weights in the installed timm, else it is missing too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from satkit.cards import ALIASES, PAPER_CARDS
from satkit.errors import InputFileError, ParameterError

PAPER69 = "paper69"
KNOWN_SETS = (PAPER69,)
TABLE1 = Path(PAPER_CARDS).with_name("paper69_table1.csv")
"""The paper's Table 1 clusters of the 69 models (``Model name``, ``Table 1 cluster``, ``Table 1 name``)."""

TABLE1_SOURCE = "paper Table 1"

# Aliases whose weights are not the file the paper ran (said in --plan and in the result's warnings).
SUBSTITUTE_WEIGHTS = {
    "gluon_xception65": "GluonCV's Xception-65 weights left timm in 0.9; xception65.tf_in1k is the TF DeepLab "
                        "ImageNet checkpoint of the same architecture, not the paper's file",
}

CURRENT, DEPRECATED, ALIAS, MISSING = "current", "timm deprecation", "satkit alias", "missing"
SUBSTITUTE = "substitute"  # a model spec given in a card's place (resolve_known's ``substitutes``)


@dataclass(frozen=True)
class Resolved:
    """One card name of a known set and what it runs as today."""

    card: str  # the paper's (timm 0.6.7) name
    timm: str | None  # the name timm builds today (None: missing)
    how: str  # CURRENT, DEPRECATED, ALIAS, MISSING (or SUBSTITUTE)
    why: str = ""  # for MISSING: the reason; for a substitute: what differs
    cluster: int | None = None  # Table 1 cluster id

    @property
    def ok(self) -> bool:
        return self.timm is not None


def table1_clusters(path: str | Path = TABLE1) -> dict[str, int]:
    """Card name -> the paper's Table 1 cluster id (1..10), in the file's order."""
    df = pl.read_csv(path, comment_prefix="#", infer_schema=False)
    return {r["Model name"]: int(r["Table 1 cluster"]) for r in df.iter_rows(named=True)}


def table1_names(path: str | Path = TABLE1) -> dict[str, str]:
    """Card name -> the model's name as printed in Table 1."""
    df = pl.read_csv(path, comment_prefix="#", infer_schema=False)
    return {r["Model name"]: r["Table 1 name"] for r in df.iter_rows(named=True)}


def card_names(known: str = PAPER69) -> list[str]:
    """The card names of a known set, in the cards file's order."""
    if known != PAPER69:
        raise ParameterError(f"known: unknown known set '{known}'; one of {', '.join(KNOWN_SETS)}")
    return pl.read_csv(PAPER_CARDS, infer_schema=False)["Model name"].to_list()


def _with_weights(name: str) -> str | None:
    """None when timm can build ``name`` with pretrained weights, else why not."""
    import timm
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        return f"'{arch}' is not a model of timm {timm.__version__}"
    if tag and name not in set(timm.list_pretrained(f"{arch}.*")):
        return f"timm {timm.__version__} has no weights tag '{tag}' for {arch}"
    if get_pretrained_cfg(name) is None or not get_pretrained_cfg(name).has_weights:
        return f"timm {timm.__version__} has no pretrained weights for {name}"
    return None


def resolve_card(card: str, aliases: dict[str, str] | None = None) -> Resolved:
    """What one card name runs as in the installed timm (see the module docstring); never raises."""
    import timm
    from timm.models import get_deprecated_models

    aliases = ALIASES if aliases is None else aliases
    deprecated = get_deprecated_models()
    arch = card.partition(".")[0]
    if card in deprecated or arch in deprecated:
        current = deprecated.get(card, deprecated.get(arch))
        if current is not None:
            why = _with_weights(current)
            if why is None:
                return Resolved(card, current, DEPRECATED)
            if card not in aliases:
                return Resolved(card, None, MISSING, f"timm maps it to {current}, but {why}")
        elif card not in aliases:
            return Resolved(card, None, MISSING, f"timm {timm.__version__} removed it without a replacement")
    elif timm.is_model(arch) and card not in aliases:
        why = _with_weights(card)
        return Resolved(card, card, CURRENT) if why is None else Resolved(card, None, MISSING, why)
    if card in aliases:
        why = _with_weights(aliases[card])
        if why is not None:
            return Resolved(card, None, MISSING, f"satkit's alias {aliases[card]} does not resolve: {why}")
        return Resolved(card, aliases[card], ALIAS, SUBSTITUTE_WEIGHTS.get(card, ""))
    return Resolved(card, None, MISSING, f"not a model of timm {timm.__version__}, not in its deprecation table, "
                                         "and no satkit alias")


def resolve_known(known: str = PAPER69, only: Sequence[str] | None = None,
                  substitutes: dict[str, str] | None = None) -> list[Resolved]:
    """Every card name of ``known`` resolved (:func:`resolve_card`), with its Table 1 cluster.

    ``only``: a subset of the card names (in the set's order). ``substitutes``: card name -> a model spec to run
    in its place (any spec ``satkit`` loads, e.g. an ``hf-hub:`` name; for tests and for weights kept elsewhere);
    a substitute is taken as given, not checked against timm.
    """
    names = card_names(known)
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ParameterError(f"{', '.join(unknown[:5])}: not in the known set {known}")
        names = [n for n in names if n in set(only)]
    clusters = table1_clusters()
    out = []
    for n in names:
        r = Resolved(n, substitutes[n], SUBSTITUTE) if substitutes and n in substitutes else resolve_card(n)
        out.append(replace(r, cluster=clusters.get(n)))
    return out


def read_release_matrix(path: str | Path, known: str = PAPER69) -> tuple[list[str], np.ndarray]:
    """The released SAT matrix (github:J-H-Hwang/SAT, ``SAT_release.csv``) as it is published: a square CSV
    with the model names as header and first column (empty corner cell), the paper's timm 0.6.7 names.

    Its names must be card names of ``known``: an unknown name is an error naming it.
    """
    from satkit.matrix.square import read_similarity_matrix

    names, S = read_similarity_matrix(path)
    cards = set(card_names(known))
    unknown = [n for n in names if n not in cards]
    if unknown:
        raise InputFileError(f"{path}: {len(unknown)} model name(s) of the SAT matrix are not card names of {known} "
                             f"({', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}); the released matrix "
                             "uses the paper's timm 0.6.7 names, as satkit/cards/paper69.csv does")
    return names, S


def weights_of(name: str) -> dict[str, Any]:
    """Where timm reads ``name``'s pretrained weights (no download) and whether they are cached."""
    from satkit.models import hub

    try:
        if name.startswith(hub.HF_HUB_PREFIX):
            w = hub.hub_weights(name, True)
        else:
            w = hub.timm_weights(name)
    except Exception as e:  # a plan never fails on one model
        return {"source": None, "cached": None, "error": str(e)}
    if w is None:
        return {"source": None, "cached": None}
    source = w.url if w.url is not None else f"{w.repo}/{' or '.join(w.files[-1])}" if w.files else w.repo
    return {"source": source, "cached": not hub._missing(w)}


def plan_rows(resolved: Sequence[Resolved]) -> pl.DataFrame:
    """One row per card: the name today, how it resolved, Table 1 cluster, weights (hub repo/file, cached)."""
    rows = []
    for r in resolved:
        w = weights_of(r.timm) if r.ok else {"source": None, "cached": None}
        rows.append({"card": r.card, "timm": r.timm, "how": r.how, "cluster": r.cluster, "weights": w["source"],
                     "cached": w["cached"], "note": r.why or None})
    return pl.DataFrame(rows, schema={"card": pl.Utf8, "timm": pl.Utf8, "how": pl.Utf8, "cluster": pl.Int64,
                                      "weights": pl.Utf8, "cached": pl.Boolean, "note": pl.Utf8})


def work_estimate(n_known: int, n: int | None, steps: int) -> str:
    """The cost of ``approx --known`` in attacks and forward passes (``n``: images, None when not known yet)."""
    per = f"{n}" if n is not None else "N"
    fwd_attack = f"{n * (steps + 2)}" if n is not None else f"N x {steps + 2}"
    fwd_known = f"{2 * n * n_known}" if n is not None else f"2N x {n_known}"
    return (f"1 attack on the new model ({steps} PGD steps over {per} images: ~{fwd_attack} forward+backward samples) "
            f"+ each of {n_known} known model(s) once: a clean pass and a pass over the new model's adversarials "
            f"on X_NB (at most {fwd_known} forward samples); no attack on a known model")


def approx_known(
    new: str,
    data,  # DataRequest
    params,  # AttackParams
    *,
    known: str = PAPER69,
    only: Sequence[str] | None = None,
    substitutes: dict[str, str] | None = None,
    sat: tuple[list[str], np.ndarray] | None = None,
    k: int | None = None,
    seed: int = 0,
    eps_s: float | None = None,
    margin_seed: int | None = None,
    **kw: Any,
):
    """``satkit approx NEW --known paper69``: N against the known set, placed in the paper's Table 1 clusters.

    The card names resolve first (:func:`resolve_known`); a missing one is reported in the result's warnings and
    left out, before any work. Underneath it is :func:`satkit.analysis.approx.approx_explicit` over the resolved
    names (one attack on N, each known model evaluated once): one-sided rows, named by card name. N joins the
    Table 1 cluster with the highest mean SAT_approx (margin to the runner-up with a bootstrap interval). With
    ``sat`` (the released matrix, :func:`read_release_matrix`) that matrix is clustered too (spectral, ``k`` or
    the eigengap, as ``approx --sat`` does) and that placement goes into ``result.also``.
    ``kw``: the remaining arguments of ``approx_explicit`` (batch_size, device, amp, model_options, ...).
    """
    from satkit.analysis.approx import approx_explicit, assign_cluster, assign_given, margin_interval
    from satkit.matrix.sat import DEFAULT_EPS_S
    from satkit.models import model_display_name

    resolved = resolve_known(known, only, substitutes)
    ok = [r for r in resolved if r.ok]
    missing = [r for r in resolved if not r.ok]
    if not ok:
        raise ParameterError(f"known: no model of {known} resolves in the installed timm "
                             f"({'; '.join(f'{r.card}: {r.why}' for r in missing[:3])})")
    if sat is not None:  # the names are checked before any work
        extra = [n for n in sat[0] if n not in {r.card for r in resolved}]
        if only is None and extra:
            raise InputFileError(f"sat: {', '.join(extra[:5])} are not card names of {known}")
    known_opts = kw.get("known_options")
    if known_opts is None or known_opts.pretrained:  # weights neither cached nor reachable: say so before the attack
        from satkit.models.hub import early_answer

        for r in ok:
            early_answer(r.timm)  # type: ignore[arg-type]
    by_spec = {model_display_name(r.timm, known_opts): r.card for r in ok}  # type: ignore[arg-type]
    res = approx_explicit(new, [r.timm for r in ok], data, params, eps_s=DEFAULT_EPS_S if eps_s is None else eps_s,
                          sat=None, k=None, seed=seed, **kw)
    res.rows = res.rows.with_columns(pl.col("model").replace(by_spec))
    res.outcomes = {by_spec.get(m, m): o for m, o in res.outcomes.items()}
    res.known_names = {r.card: r.timm for r in ok}  # type: ignore[misc]
    res.warnings[:0] = [f"{r.card}: missing in timm ({r.why}); left out of the known set" for r in missing] + [
        f"{r.card} runs as {r.timm}: {r.why}" for r in ok if r.why]
    in_rows = set(res.rows["model"].to_list())
    if sat is not None:  # the released matrix's clusters, over the models that ran
        names, S = sat
        keep = [i for i, n in enumerate(names) if n in in_rows]
        other = replace_result(res)
        assign_cluster(other, [names[i] for i in keep], np.asarray(S, dtype=float)[np.ix_(keep, keep)], k, seed)
        margin_interval(other, seed=seed if margin_seed is None else margin_seed)
        res.also["sat matrix"] = other.placement() | {"k_from_eigengap": other.k_from_eigengap,
                                                      "clusters": dict(zip(other.cluster_names or [],
                                                                           map(int, other.cluster_labels)))}
        res.warnings.extend(w for w in other.warnings if w not in res.warnings)
    clusters = {r.card: r.cluster for r in ok if r.cluster is not None and r.card in in_rows}
    assign_given(res, clusters, TABLE1_SOURCE, k=max(table1_clusters().values()))  # type: ignore[arg-type]
    margin_interval(res, seed=seed if margin_seed is None else margin_seed)
    return res


def replace_result(res):
    """A copy of an ApproxResult to place in other clusters (rows and outcomes shared, placement fields fresh)."""
    from satkit.analysis.approx import ApproxResult

    return ApproxResult(model=res.model, rows=res.rows, eps_s=res.eps_s, exact=res.exact, outcomes=res.outcomes,
                        warnings=[])
