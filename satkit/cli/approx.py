"""satkit approx: SAT of a new model against known models, exact from a study's stored attacks or one-sided (appendix G.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from satkit import settings as S
from satkit.cli import common as c


def approx(
    model: str = typer.Argument(..., help="The NEW model: timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    study: Optional[Path] = typer.Option(
        None, "--study",
        help="Study directory (satkit study): known models, clean set, attack settings and sat.csv come from it.",
    ),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Without --study: the known models (repeat the option or separate with commas)."),
    known: Optional[str] = typer.Option(
        None, "--known",
        help="A known set instead of --models/--study: paper69, the paper's 69 ImageNet models (names resolved in the installed timm), placed in the paper's "
        "Table 1 clusters; needs --data (ImageNet val).",
    ),
    plan: bool = typer.Option(
        False, "--plan",
        help="With --known: print each model's name today (or why it is missing), its Table 1 cluster, the weights it needs and the work, then exit (offline, "
        "no model is loaded).",
    ),
    output: str = typer.Option(
        "-", "--output", "-o",
        help="Table: one row per known model (model, cluster, kind, n_both, n_fooled, fool_rate, sat_approx, n_fooled_new, sat); - for stdout.",
    ),
    one_sided: bool = typer.Option(
        False, "--one-sided",
        help="With --study: only the paper's one-sided estimate (appendix G.1), not the exact rows (saves N's forward passes over the known models' "
        "adversarials).",
    ),
    k: Optional[int] = c.KOpt,
    sat: Optional[str] = typer.Option(
        None, "--sat",
        help="Without --study: SAT matrix of the known models, for the cluster assignment. With --known paper69: the released matrix (SAT_release.csv of "
        "github:J-H-Hwang/SAT, as published), clustered too; both placements are reported.",
    ),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write the rows, the cluster N joins, the runner-up and the margin as JSON."),
    save_attack: Optional[Path] = typer.Option(None, "--save-attack", help="Keep the attack file made on the new model (e.g. to add it to the study later)."),
    reuse: bool = typer.Option(
        True, "--reuse/--no-reuse",
        help="When the study already holds the new model's attack file (same weights and settings), reuse it.",
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Without --study: the data (default digits). With --study the study's data is used."),
    n: Optional[int] = typer.Option(None, "--n", help="Without --study: sample size (default all)."),
    data_seed: Optional[int] = typer.Option(None, "--data-seed", help="Without --study: seed of the --n sample."),
    canvas: Optional[int] = c.CanvasOpt,
    labels: Optional[str] = typer.Option(None, "--labels", help="Without --study: labels of a flat image folder given as --data (see satkit attack --help)."),
    eps: Optional[str] = typer.Option(None, "--eps", help=f"Without --study: L-infinity budget (default {c.EPS_DEFAULTS})."),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"Without --study: PGD iterations (default {S.STEPS})."),
    eps_s: Optional[float] = typer.Option(None, "--eps-s", help=f"Without --study: SAT floor in percent (default {S.EPS_S:g})."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means (clustering). Without --study also the PGD random start."),
    batch_size: Optional[str] = typer.Option(c.DEFAULT_BATCH, "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    amp: Optional[str] = typer.Option(None, "--amp", help="Autocast: bf16, fp16 (GPU) or off. Default: the study's, else off."),
    arch: Optional[str] = c.ArchOpt,
    model_kwargs: Optional[List[str]] = c.ModelKwargsOpt,
    allow_code: bool = c.CodeOpt,
    pretrained: bool = c.PretrainedOpt,
    mean: Optional[str] = c.MeanOpt,
    std: Optional[str] = c.StdOpt,
    input_size: Optional[str] = c.InputSizeOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Name of the new model in tables."),
    quiet: bool = c.QuietOpt,
) -> None:
    """SAT of a NEW model against known models, attacking only the new one.

    The new model N is attacked once (the study's clean set and attack settings).
    For each known model B, over X_NB (samples N and B both get right when clean):

        one-sided (appendix G.1):  SAT_approx(N, B) = ln(max(eps_s, 100 * #{B(x_N) != y} / |X_NB|))

        exact (with --study):      SAT(N, B) = ln(max(eps_s, 100 * (#{B(x_N) != y} + #{N(x_B) != y}) / (2 |X_NB|)))

    With --study the exact row is the default wherever the study holds a current
    attack file of B (B's adversarials are stored: only N's forward passes over
    them are added), so it equals the row the study would compute with N in it;
    a missing or stale file leaves that row one-sided (column kind says which).
    Cost: one attack on N + one forward pass of each known model over N's X_NB
    adversarials + (exact) one pass of N over each known model's X_NB
    adversarials; no attack on a known model. N then joins the cluster of the
    study's SAT matrix (spectral, -k or eigengap) with the highest mean SAT (exact)
    or SAT_approx; the margin to the runner-up gets a 95% bootstrap interval over
    images. A model already in the study is left out of it (leave-one-out; its
    stored attack is reused). Without --study (--models, --known) rows are one-sided.

    --known paper69: the paper's 69 models (their cards' timm 0.6.7 names resolved
    in the installed timm: its current name, timm's deprecation table, or
    satkit's alias table; a name that resolves nowhere is listed as missing and
    left out, before any work). N joins the paper's Table 1 cluster with the
    highest mean SAT_approx; with --sat SAT_release.csv also a cluster of that
    matrix. --plan lists the names, weights and cost without loading anything.

    Example:

        satkit approx my_model.safetensors --arch digits/resnet --study satkit-study -o approx.csv

        satkit approx digits/resnet-s3 --models digits/resnet-s1,digits/vit-s1,digits/mixer-s1 --n 200

        satkit approx my_vit --known paper69 --data imagenet/val --labels LOC_val_solution.csv --plan
    """
    from satkit.devices import resolve_device
    from satkit.io.atomic import atomic_output, check_outputs
    from satkit.io.tables import write_table
    from satkit.models import ModelOptions
    from satkit.study.approx import ApproxRequest, run_approx

    c.set_quiet(quiet)
    if plan:
        if known is None:
            raise typer.BadParameter("--plan lists a known set's models: give --known paper69", param_hint="--plan")
        _plan(known, n, steps, sat)
        return
    req = ApproxRequest(
        model, study, tuple(m.strip() for v in (models or []) for m in v.split(",") if m.strip()), k=k, sat=sat,
        save_attack=save_attack, reuse=reuse, one_sided=one_sided, data=data, n=n, data_seed=data_seed, canvas=canvas, labels=labels,
        eps=c.parse_fraction(eps, "--eps") if eps else None, steps=steps, eps_s=eps_s, seed=seed,
        batch_size=c.batch_size_value(batch_size), amp=amp, known=known,
        model_options=c.model_options(arch, allow_code, pretrained, mean, std, input_size, name, model_kwargs),
        known_options=ModelOptions(pretrained=pretrained))  # never --allow-code-execution: the new model's only
    req.check()
    check_outputs({"--output": output, "--summary": summary, "--save-attack": save_attack}, inputs=req.inputs())
    dev = resolve_device(device)
    said: list[str] = []
    if known is not None:  # names that do not resolve are said before any work
        from satkit.study.known import resolve_known

        said = [f"{r.card}: missing in timm ({r.why}); left out of the known set" for r in resolve_known(known) if not r.ok]
        for w in said:
            c.warn(w)
    with c.progress_bar() as p:
        res = run_approx(req, device=dev, on_event=_progress(p))
    for w in res.warnings:
        if w not in said:
            c.warn(w)
    write_table(res.rows, output)
    if summary is not None:
        with atomic_output(summary) as tmp:
            tmp.write_text(json.dumps(res.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not c.STATE.quiet:
        _print(res)


def _plan(known: str, n: Optional[int], steps: Optional[int], sat: Optional[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from satkit.study.known import plan_rows, read_release_matrix, resolve_known, work_estimate

    rows = plan_rows(resolve_known(known))
    if sat is not None:  # names checked now, before any work
        read_release_matrix(sat, known)
    t = Table(title=f"known set {known}: {rows.height} models in the installed timm", title_justify="left", pad_edge=False)
    for col in ("card", "timm name", "how", "Table 1", "weights", "cached"):
        t.add_column(col, justify="right" if col == "Table 1" else "left")
    for r in rows.iter_rows(named=True):
        name = r["timm"] if r["timm"] is not None else f"missing: {r['note']}"
        t.add_row(escape(r["card"]), escape(name), r["how"], str(r["cluster"]), escape(r["weights"] or "-"),
                  "-" if r["cached"] is None else ("yes" if r["cached"] else "no"))
    c.print_table(t)
    for r in rows.filter(rows["timm"].is_not_null() & rows["note"].is_not_null()).iter_rows(named=True):
        c.info(escape(f"{r['card']} -> {r['timm']}: {r['note']}"))
    ok = rows.filter(rows["timm"].is_not_null()).height
    missing = rows.height - ok
    not_cached = rows.filter(rows["cached"].not_()).height
    c.info(f"{ok} of {rows.height} resolve, {missing} missing; {not_cached} need their weights downloaded")
    c.info("work: " + work_estimate(ok, n, steps if steps is not None else S.STEPS))


def _progress(p):
    tasks: dict[tuple[str, str], int] = {}
    what = {"transfer": "forward  known models on X_NB", "exact": "forward  new model on known adversarials"}

    def on_event(stage: str, m: str, done: int, total: int) -> None:
        key = (stage, m if stage == "attack" else "")
        if key not in tasks:
            tasks[key] = p.add_task(f"{stage:8s} {m}" if stage == "attack" else what.get(stage, stage), total=total or None)
        p.update(tasks[key], completed=done, total=total or None)

    return on_event


def _print(res) -> None:
    from rich.markup import escape
    from rich.table import Table

    kind = "exact" if res.exact else ("one-sided" if not (res.rows["kind"] == "exact").any() else "exact where marked")
    t = Table(title=f"SAT of {escape(res.model)} ({kind}, higher = more similar)", title_justify="left", pad_edge=False)
    for col in ("model", "cluster", "kind", "|X_NB|", "fool rate", "SAT_approx", "SAT"):
        t.add_column(col, justify="left" if col in ("model", "kind") else "right")
    key = "sat" if res.exact else "sat_approx"
    for r in res.rows.sort(key, descending=True, nulls_last=True).iter_rows(named=True):
        t.add_row(escape(r["model"]), "-" if r["cluster"] is None else str(r["cluster"]), r["kind"], str(r["n_both"]),
                  "-" if r["fool_rate"] is None else f"{r['fool_rate']:.1%}",
                  "-" if r["sat_approx"] is None else f"{r['sat_approx']:.3f}",
                  "-" if r["sat"] is None else f"{r['sat']:.3f}")
    c.print_table(t)
    how = "reused the study's attack file" if res.attack_reused else f"1 attack ({res.attack_forward_samples} forward samples)"
    back = f" + {res.forward_samples_new} of the new model over the known models' adversarials" if res.forward_samples_new else ""
    c.info(f"cost: {how} + {res.forward_samples} forward samples over {res.rows.height} known model(s){back}")
    if res.joined is not None:
        members = ", ".join(res.members(res.joined))
        score = "SAT" if res.exact else "SAT_approx"
        tail = (f"; runner-up cluster {res.runner_up} ({res.cluster_scores[res.runner_up]:.3f}), margin {res.margin:.3f}"
                if res.runner_up is not None else "")
        if res.margin_ci is not None:
            lo, hi = res.margin_ci
            tail += f" ({res.margin_level:.0%} interval {lo:.3f} .. {hi:.3f}{', a coin toss' if lo <= 0 <= hi else ''})"
        where = f" ({res.cluster_method})" if res.cluster_method == "paper Table 1" else ""
        c.info(escape(f"{res.model} joins cluster {res.joined} of {res.k}{where} ({members}): mean {score} "
                      f"{res.cluster_scores[res.joined]:.3f}{tail}"))
    for what, pl_ in res.also.items():  # further placements, e.g. the released SAT matrix's clusters
        if pl_.get("joined") is None:
            continue
        j = str(pl_["joined"])
        members = ", ".join(sorted(n for n, cl in pl_.get("clusters", {}).items() if str(cl) == j))
        tail = f", margin {pl_['margin']:.3f}" if pl_.get("margin") is not None else ""
        if pl_.get("margin_ci"):
            lo, hi = pl_["margin_ci"]
            tail += f" (interval {lo:.3f} .. {hi:.3f}{', a coin toss' if lo <= 0 <= hi else ''})"
        c.info(escape(f"{res.model} joins cluster {j} of {pl_['k']} of the {what} ({members}): mean SAT_approx "
                      f"{pl_['cluster_scores'][j]:.3f}{tail}"))
    if res.known_names:
        moved = {k: v for k, v in res.known_names.items() if k != v}
        if moved:
            c.info(escape("known models run as: " + ", ".join(f"{k} -> {v}" for k, v in moved.items())))
