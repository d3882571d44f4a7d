"""satkit study: the whole pipeline in one directory, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from satkit import settings as S
from satkit.cli import common as c

_STAGE_LABELS = {"zoo": "train", "data": "data", "attack": "attack", "transfer": "transfer", "matrix": "matrix", "analysis": "analysis"}
_STEPPED_STAGES = ("zoo", "analysis", "precision")


def study(
    models: Optional[List[str]] = typer.Argument(None, help="Models to compare (default: the built-in digits zoo, `satkit zoo list`)."),
    zoo_set: Optional[str] = typer.Option(
        None, "--zoo",
        help="Compare a named set of the digits zoo instead of naming models: default (the default) or strategies (resnet/vit seeds and training-strategy "
        "variants); see satkit zoo list --set.",
    ),
    out: Path = typer.Option(Path(S.STUDY_DIR), "--out", "-o", help="Study directory (created; reruns resume from what it holds)."),
    data: str = c.DataOpt,
    n: Optional[int] = c.NOpt,
    data_seed: int = c.DataSeedOpt,
    canvas: Optional[int] = c.CanvasOpt,
    labels: Optional[str] = c.LabelsOpt,
    attack_name: str = c.AttackOpt,
    eps: Optional[str] = c.EpsOpt,
    steps: int = c.StepsOpt,
    step_size: Optional[str] = c.StepSizeOpt,
    seed: int = c.SeedOpt,
    decay: Optional[float] = c.DecayOpt,
    vmi_samples: Optional[int] = c.VmiSamplesOpt,
    vmi_beta: Optional[float] = c.VmiBetaOpt,
    rho: Optional[float] = c.RhoOpt,
    band: Optional[float] = c.BandOpt,
    attack_all: bool = c.AttackAllOpt,
    storage: str = c.StorageOpt,
    eps_s: float = c.EpsSOpt,
    batch_size: Optional[str] = typer.Option(c.DEFAULT_BATCH, "--batch-size", help=c.BatchSizeHelp),
    device: str = c.DeviceOpt,
    devices: Optional[str] = typer.Option(
        None, "--devices",
        help="Run jobs in parallel, one worker process per device, e.g. cuda:0,cuda:1 (same outputs as one device).",
    ),
    ray: Optional[str] = typer.Option(
        None, "--ray",
        help="Run each attack and each target's transfers as a Ray task: a cluster address (auto, ray://host:10001) or 'local'. Needs pip install "
        "'satkit[ray]' and a study directory every node can see.",
    ),
    amp: str = c.AmpOpt,
    compile_: bool = typer.Option(False, "--compile", help="torch.compile each model before its job (GPUs, long attacks)."),
    per_sample: bool = typer.Option(
        True, "--per-sample/--no-per-sample",
        help="Keep per-sample outcomes (transfer/<model>.samples.parquet) for confidence intervals.",
    ),
    ci: Optional[float] = c.CiOpt,
    n_boot: int = c.NBootOpt,
    pretrained: bool = c.PretrainedOpt,
    analyses: bool = typer.Option(
        True, "--analyses/--no-analyses",
        help="Also cluster the matrix and rank card components (clusters.csv, keywords.csv, importance.csv, plots).",
    ),
    k: Optional[int] = c.KOpt,
    cluster_method: str = c.ClusterMethodOpt,
    shard: Optional[str] = typer.Option(
        None, "--shard",
        help="i/n: do only shard i's share (0-based) of the attacks and target evaluations, for job arrays; rerun shards until the matrix is written.",
    ),
    wait: bool = typer.Option(False, "--wait", help="If another satkit run holds the study directory, wait for it instead of stopping."),
    precision: Optional[float] = typer.Option(
        None, "--precision",
        help="Adaptive: add images in nested, class-stratified chunks until every off-diagonal SAT cell's bootstrap interval (level --ci, default "
        f"{S.CI_LEVEL:g}) has half-width <= W log units, or --n images are used. Chunks are studies in OUT/chunks/; reruns reuse them; the root is a study "
        "like any other (study.json, report). See docs/performance.md.",
    ),
    chunk: int = typer.Option(S.CHUNK, "--chunk", help=f"With --precision: images per chunk (--n is rounded up to whole chunks). Range: {c.L.CHUNK.text}."),
    plan: bool = typer.Option(False, "--plan", help="Only print what the study would run (attacks, transfer evaluations, forward/backward passes) and exit."),
    quiet: bool = c.QuietOpt,
) -> None:
    """Run a whole SAT study: (train zoo) -> attack every model -> transfer all -> SAT matrix.

    Writes attacks/, transfer/, sat.csv and sat_long.csv into the study directory
    and prints the matrix. Work whose output exists and matches is skipped, so an
    interrupted study resumes and adding a model costs one attack plus its transfers.

    Example:

        satkit study                                   # the built-in digits zoo

        satkit study resnet50 vit_small_patch16_224 --data /data/imagenet/val --n 5000 -o study-in1k

        satkit study --plan                            # the cost, before anything runs

        satkit study --zoo strategies -o study-strategies   # seeds vs training strategies (resnet, vit)

        satkit study --shard $SLURM_ARRAY_TASK_ID/8 -o study   # one of 8 array jobs; run the array twice

        satkit study m1 m2 m3 m4 --data val/ --devices cuda:0,cuda:1,cuda:2,cuda:3 -o study

        satkit study m1 m2 m3 m4 --data /shared/val --ray auto -o /shared/study   # on a Ray cluster

        satkit study --ci 0.95                         # sat_long.csv gets 95 % intervals per cell

        satkit study --attack mifgsm -o study-mifgsm   # the same matrix under another attack (satkit compare)
    """
    import contextlib
    import time

    from satkit.study import StudyConfig, plan_study, run_study
    from satkit.study.executors import choose_executor

    c.set_quiet(quiet)
    params = c.attack_params(data, attack_name, eps, steps, step_size, seed, storage, attack_all=attack_all,
                             decay=decay, samples=vmi_samples, beta=vmi_beta, rho=rho, band=band)
    cfg = StudyConfig.create(models, out, zoo_set=zoo_set, data=data, n=n, data_seed=data_seed, canvas=canvas,
                             labels=labels, params=params, batch_size=c.batch_size_value(batch_size), amp=amp,
                             model_options=c.model_options(None, False, pretrained), per_sample=per_sample,
                             compile=compile_, eps_s=eps_s, k=k, ci=ci, n_boot=n_boot, analyses=analyses,
                             cluster_method=cluster_method, precision=precision, chunk=chunk)
    shard_ = c.parse_shard(shard)
    if plan:
        for key, value in plan_study(cfg).rows():
            typer.echo(f"{key}: {value}")
        return
    executor, dev, where = choose_executor(devices, ray, device)
    t0 = time.perf_counter()
    with executor if ray is not None else contextlib.nullcontext(), c.progress_bar() as p:
        res = run_study(cfg, device=dev, executor=executor, shard=shard_, wait_for_lock=wait,
                        on_event=_progress(p, precision), on_wait=c.info)
        if not res.waiting:
            c.complete_tasks(p)  # the study is done: a bar left short is work it skipped
    _render(res, cfg, shard, where, time.perf_counter() - t0)


def _progress(p, precision: Optional[float]):
    """One bar per (stage, model); zoo training and the analyses count their steps across models or parts:
    one bar each, naming the current step (a bar per step would stay unfinished at its step's count)."""
    tasks: dict[tuple[str, str], int] = {}

    def on_event(ev) -> None:
        label = _STAGE_LABELS.get(ev.stage, ev.stage)
        if ev.stage == "precision":
            hw = "n/a" if ev.value is None or ev.value == float("inf") else f"{ev.value:.3f}"
            desc = f"adaptive: {ev.done} images, widest half-width {hw} (target {precision:g})"
        else:
            chunk = f" [chunk {ev.chunk}]" if ev.chunk is not None else ""
            desc = f"{label:8s} {ev.model.removeprefix('digits/')}{chunk}" + (" (done before)" if ev.skipped else "")
        key = (ev.stage, "" if ev.stage in _STEPPED_STAGES else ev.model)
        if key not in tasks:
            tasks[key] = p.add_task(desc, total=ev.total or None)
        p.update(tasks[key], completed=ev.done, total=ev.total or None, description=desc)

    return on_event


def _render(res, cfg, shard: Optional[str], where: str, seconds: float) -> None:
    from satkit.cli.render import render_matrix

    if res.waiting:
        c.info(f"shard {shard}: its share is done; waiting for other shards ({len(res.waiting)} outputs: "
               f"{', '.join(res.waiting[:3])}{', ...' if len(res.waiting) > 3 else ''}); run it again when they finish")
        return
    for w in [*res.matrix.warnings, *res.notes]:
        c.warn(w)
    if c.STATE.quiet:
        return
    render_matrix(res.matrix.names, res.matrix.values, c.err_console)
    if res.analysis is not None:
        _render_analysis(res.analysis)
    if res.adaptive is not None:
        a = res.adaptive
        hw = "n/a" if a["max_half_width"] is None else f"{a['max_half_width']:.3f}"
        why = (f"<= {cfg.precision:g}" if a["stopped"] == "precision"
               else f"> {cfg.precision:g}: all {a['images_available']} images used")
        c.info(f"adaptive study: {a['images_used']} images in {a['chunks_used']} chunk(s); widest {a['level']:.0%} "
               f"half-width {hw} {why}")
    c.info(
        f"{res.attacks_run} attack(s) run, {res.attacks_skipped} reused; {res.transfer_evaluations} transfer "
        f"evaluation(s) run, {res.transfer_skipped} reused; {seconds:.1f} s"
        + (f" on {where}" if where else "") + f". Matrix: {res.out_dir / 'sat.csv'}"
        + (f"; report: {res.report}" if res.report is not None else "")
    )


def _render_analysis(an) -> None:
    from satkit.cli.cluster import cluster_table
    from satkit.cli.importance import importance_table

    c.print_table(cluster_table(an.clusters, an.keywords))
    imp = an.importance
    if imp is not None:
        c.print_table(importance_table(imp))
        c.info(f"importance: held-out R^2 = {imp.r2_cv:.3f} ± {imp.r2_cv_std:.3f} over {imp.n_pairs} pairs")
    else:
        c.warn(an.note)
    ens = an.ensembles
    if ens is not None and ens.correlation:
        r = ens.correlation
        c.info(f"ensembles: SAT vs error reduction over {r.get('n', '?')} pairs: Pearson {r['pearson_r']:.3f} "
               f"(p={r['pearson_p']:.2g}), Spearman {r['spearman_r']:.3f} (p={r['spearman_p']:.2g}); see ensemble.csv")
