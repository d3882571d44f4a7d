"""satkit approx: one-sided (approximate) SAT of a new model against known models (paper appendix G.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from satkit import settings as S
from satkit.cli import common as c


def approx(
    model: str = typer.Argument(..., help="The NEW model: timm name[.tag], digits/<name>, or a model file (.safetensors with --arch, .pt, .pt2)."),
    study: Optional[Path] = typer.Option(None, "--study", help="Study directory (satkit study): known models, clean set, attack settings and sat.csv come from it."),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Without --study: the known models (repeat the option or separate with commas)."),
    output: str = typer.Option("-", "--output", "-o", help="Table: one row per known model (model, cluster, n_both, n_fooled, fool_rate, sat_approx); - for stdout."),
    k: Optional[int] = c.KOpt,
    sat: Optional[str] = typer.Option(None, "--sat", help="Without --study: SAT matrix of the known models, for the cluster assignment."),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write the rows, the cluster N joins, the runner-up and the margin as JSON."),
    save_attack: Optional[Path] = typer.Option(None, "--save-attack", help="Keep the attack file made on the new model (e.g. to add it to the study later)."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="When the study already holds the new model's attack file (same weights and settings), reuse it."),
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
    """Approximate SAT of a NEW model against known models without attacking them (appendix G.1).

    Only the new model N is attacked (same clean set and attack settings as the
    study). For each known model B, over X_NB (samples N and B both get right
    when clean; B's clean correctness is read from its attack file in the study):

        SAT_approx(N, B) = ln(max(eps_s, 100 * #{x in X_NB : B(x_N) != y} / |X_NB|))

    The B -> N direction of full SAT is omitted, so it is one-sided. Cost: one
    attack + one forward pass (over X_NB) per known model -- instead of an
    attack on every model. N then joins the cluster of the study's SAT matrix
    (spectral, -k or eigengap) with the highest mean approximate SAT; the margin
    to the runner-up is reported. A model that is already in the study is left
    out of it (leave-one-out check; its stored attack is reused).

    Example:

        satkit approx my_model.safetensors --arch digits/resnet --study satkit-study -o approx.csv

        satkit approx digits/resnet-s3 --models digits/resnet-s1,digits/vit-s1,digits/mixer-s1 --n 200
    """
    from satkit.devices import resolve_device
    from satkit.io.atomic import atomic_output, check_outputs
    from satkit.io.tables import write_table
    from satkit.models import ModelOptions
    from satkit.study.approx import ApproxRequest, run_approx

    c.set_quiet(quiet)
    req = ApproxRequest(
        model, study, tuple(m.strip() for v in (models or []) for m in v.split(",") if m.strip()), k=k, sat=sat,
        save_attack=save_attack, reuse=reuse, data=data, n=n, data_seed=data_seed, canvas=canvas, labels=labels,
        eps=c.parse_fraction(eps, "--eps") if eps else None, steps=steps, eps_s=eps_s, seed=seed,
        batch_size=c.batch_size_value(batch_size), amp=amp,
        model_options=c.model_options(arch, allow_code, pretrained, mean, std, input_size, name, model_kwargs),
        known_options=ModelOptions(pretrained=pretrained))  # never --allow-code-execution: the new model's only
    req.check()
    check_outputs({"--output": output, "--summary": summary, "--save-attack": save_attack}, inputs=req.inputs())
    dev = resolve_device(device)
    with c.progress_bar() as p:
        res = run_approx(req, device=dev, on_event=_progress(p))
    for w in res.warnings:
        c.warn(w)
    write_table(res.rows, output)
    if summary is not None:
        with atomic_output(summary) as tmp:
            tmp.write_text(json.dumps(res.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not c.STATE.quiet:
        _print(res)


def _progress(p):
    tasks: dict[tuple[str, str], int] = {}

    def on_event(stage: str, m: str, done: int, total: int) -> None:
        key = (stage, m if stage == "attack" else "")
        if key not in tasks:
            tasks[key] = p.add_task(f"{stage:8s} {m}" if stage == "attack" else "forward  known models on X_NB",
                                    total=total or None)
        p.update(tasks[key], completed=done, total=total or None)

    return on_event


def _print(res) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"approximate SAT of {escape(res.model)} (one-sided, higher = more similar)", title_justify="left", pad_edge=False)
    for col in ("model", "cluster", "|X_NB|", "fool rate", "SAT_approx"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in res.rows.sort("sat_approx", descending=True, nulls_last=True).iter_rows(named=True):
        t.add_row(escape(r["model"]), "-" if r["cluster"] is None else str(r["cluster"]), str(r["n_both"]),
                  "-" if r["fool_rate"] is None else f"{r['fool_rate']:.1%}",
                  "-" if r["sat_approx"] is None else f"{r['sat_approx']:.3f}")
    c.print_table(t)
    how = "reused the study's attack file" if res.attack_reused else f"1 attack ({res.attack_forward_samples} forward samples)"
    c.info(f"cost: {how} + {res.forward_samples} forward samples over {res.rows.height} known model(s)")
    if res.joined is not None:
        members = ", ".join(res.members(res.joined))
        tail = (f"; runner-up cluster {res.runner_up} ({res.cluster_scores[res.runner_up]:.3f}), margin {res.margin:.3f}"
                if res.runner_up is not None else "")
        c.info(escape(f"{res.model} joins cluster {res.joined} of {res.k} ({members}): mean SAT_approx "
                      f"{res.cluster_scores[res.joined]:.3f}{tail}"))
