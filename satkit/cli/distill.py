"""satkit distill: train a student with a teacher (DeiT hard distillation), or rank teachers by SAT."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from satkit.cli import common as c


def distill(
    teacher: Optional[str] = typer.Option(
        None, "--teacher",
        help="Teacher model spec (timm name, digits/<name>, model file). Omit to train the student without a teacher (baseline).",
    ),
    student: Optional[str] = typer.Option(
        None, "--student",
        help="Student architecture trained from scratch: digits/<arch> (digits/vit, digits/resnet, ...) or a timm architecture. With --recommend: a model of "
        "the SAT matrix or a zoo architecture.",
    ),
    data: str = typer.Option(
        "digits", "--data",
        help="Training data. digits = train on digits:train, evaluate on the held-out digits test split. Anything else needs --eval-data.",
    ),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Evaluation data (default for digits: the digits test split)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Student weights to write (.safetensors state dict; load with --arch STUDENT_ARCH)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs",
        help="Training epochs (default: the zoo recipe of the student architecture, e.g. 30 for digits/vit).",
    ),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate of AdamW (default: the zoo recipe)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size (default: the zoo recipe, 64)."),
    soft: bool = typer.Option(
        False, "--soft",
        help="Soft distillation: KL between temperature-softened teacher and student distributions, times T^2 (default: DeiT hard distillation).",
    ),
    temperature: float = typer.Option(3.0, "--temperature", help="Temperature T of --soft."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the teacher term: (1-alpha)*CE(student, y) + alpha*teacher term. DeiT hard: 0.5."),
    seed: int = typer.Option(0, "--seed", help="Seed of the student's initialization, data order and augmentation."),
    sat: Optional[str] = typer.Option(
        None, "--sat",
        help="SAT matrix CSV: add SAT(teacher, student) to the metrics; with --recommend, the matrix to rank teachers from.",
    ),
    sat_proxy: Optional[List[str]] = typer.Option(
        None, "--sat-proxy",
        help="Matrix model(s) standing in for the student in --sat (the paper used DeiT-S for a DeiT-Ti student). Default: the student's name, or the zoo "
        "models of its architecture.",
    ),
    metrics: Optional[Path] = typer.Option(
        None, "--metrics",
        help="Append one metrics row (teacher, student, sat, student/teacher accuracy, ...) to this CSV.",
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the student in the metrics row (default: the output file's stem)."),
    recommend: bool = typer.Option(False, "--recommend", help="Do not train: rank candidate teachers for --student from --sat and model cards."),
    cards: Optional[str] = typer.Option(None, "--cards", help="With --recommend: extra model cards CSV (adds to / overrides the built-in cards)."),
    rec_output: str = typer.Option("-", "--recommend-output", help="With --recommend: where to write the ranking CSV; - for stdout."),
    device: str = c.DeviceOpt,
    arch: Optional[str] = c.ArchOpt,
    model_kwargs: Optional[List[str]] = c.ModelKwargsOpt,
    allow_code: bool = c.CodeOpt,
    pretrained: bool = c.PretrainedOpt,
    quiet: bool = c.QuietOpt,
) -> None:
    """Distill a teacher into a student trained from scratch (paper 5.2), or recommend a teacher by SAT.

    Training: DeiT hard distillation, loss = 0.5*CE(student, y) + 0.5*CE(student,
    argmax teacher) (alpha = 0.5); --soft uses KL(teacher/T || student/T) * T^2
    instead of the hard term. The teacher is frozen in eval mode; both models take
    the same canvas pixels, each resized by its own preprocessing. The zoo recipe
    of the student architecture is used (AdamW, cosine, label smoothing 0.1 on
    the true label, +/-1 px shifts), seeded. Writes the student weights and
    prints student and teacher accuracy on the evaluation data.

    --recommend ranks the other models of --sat as teachers for --student, per
    the paper's finding: a teacher with a different base architecture (model
    card) should be as DISSIMILAR as possible (lowest SAT first); one with the
    same base architecture as SIMILAR as possible (highest SAT first); different
    architectures are ranked first because the paper recommends a significantly
    different teacher overall. Each candidate gets a one-line reason.

    Example:

        satkit distill --teacher digits/resnet-s1 --student digits/vit -o vit-from-resnet.safetensors --metrics distill.csv

        satkit distill --student digits/vit -o vit-baseline.safetensors --metrics distill.csv

        satkit distill --recommend --student digits/vit --sat sat.csv
    """
    c.set_quiet(quiet)
    if recommend:
        _recommend(student, sat, cards, sat_proxy, rec_output, teacher, output)
        return
    _train(teacher, student, data, eval_data, output, epochs, lr, batch_size, soft, temperature, alpha, seed, sat,
           sat_proxy, metrics, name, device, arch, allow_code, pretrained, model_kwargs)


def _recommend(student, sat, cards, sat_proxy, rec_output, teacher, output) -> None:
    from rich.markup import escape
    from rich.table import Table

    from satkit.analysis.distill import recommend_teachers
    from satkit.cards import load_cards
    from satkit.io.atomic import check_outputs
    from satkit.io.tables import write_table
    from satkit.matrix.square import read_similarity_matrix

    if student is None:
        c.fail("--recommend needs --student NAME (a model of the SAT matrix or a zoo architecture like digits/vit)")
    if sat is None:
        c.fail("--recommend needs --sat sat.csv")
    if teacher is not None or output is not None:
        c.fail("--recommend only ranks teachers; drop --teacher and -o")
    if sat == "-" and cards == "-":
        c.fail("stdin (-) can be given only once")
    check_outputs({"--recommend-output": rec_output}, [sat, cards])
    card_table = load_cards(cards)
    names, S = read_similarity_matrix(sat)
    ranking = recommend_teachers(student, names, S, card_table, sat_proxy)
    write_table(ranking, rec_output)
    if c.STATE.quiet:
        return
    t = Table(title=f"teachers for {escape(student)} (best first)", title_justify="left", pad_edge=False, show_lines=False)
    for col in ("rank", "teacher", "base", "SAT", "reason"):
        t.add_column(col, justify="right" if col in ("rank", "SAT") else "left")
    for r in ranking.iter_rows(named=True):
        t.add_row(str(r["rank"]), escape(r["teacher"]), escape(r["base_architecture"] or "?"), f"{r['sat']:.2f}", escape(r["reason"]))
    c.print_table(t)


def _train(teacher, student, data, eval_data, output, epochs, lr, batch_size, soft, temperature, alpha, seed, sat,
           sat_proxy, metrics, name, device, arch, allow_code, pretrained, model_kwargs=None) -> None:
    from satkit.analysis.distill import (
        DistillConfig,
        append_metrics,
        metrics_row,
        resolve_student,
        save_student,
        student_proxies,
        teacher_student_sat,
    )
    from satkit.analysis.distill import (
        distill as run_distill,
    )
    from satkit.data import load_data
    from satkit.devices import resolve_device
    from satkit.io.atomic import check_outputs
    from satkit.matrix.square import read_similarity_matrix
    from satkit.models import load_model

    if student is None:
        c.fail("--student is required (e.g. --student digits/vit)")
    if output is None:
        c.fail("-o/--output is required: where to write the student weights (.safetensors)")
    if output.suffix != ".safetensors":
        c.fail(f"-o {output}: student weights are written as safetensors; use a .safetensors file name")
    # every output, and the metrics table the run appends to, is checked before training:
    # a bad path must not cost a training run
    check_outputs({"-o": output, "--metrics": metrics}, [teacher, sat, data, eval_data])
    if metrics is not None:
        _check_metrics_table(metrics)
        from satkit.io.cells import check_cells

        # the student's row is checked now too, not refused by the table writer after training
        check_cells(metrics, [("student", [name or output.stem]), ("weights", [str(output)])])
    config = DistillConfig(epochs=epochs, lr=lr, batch_size=batch_size, soft=soft, temperature=temperature, alpha=alpha, seed=seed)
    config.check()
    if soft and teacher is None:
        c.fail("--soft needs a --teacher")
    is_digits = data.strip() == "digits"
    if eval_data is None and not is_digits:
        c.fail(f"--data {data}: give the evaluation data with --eval-data (only digits has a built-in test split)")
    sat_m = read_similarity_matrix(sat) if sat is not None else None
    dev = resolve_device(device)
    train = load_data("digits:train" if is_digits else data)
    test = load_data(eval_data if eval_data is not None else "digits", canvas=train.canvas[1])
    arch_info = resolve_student(student, max(train.num_classes, int(train.labels.max()) + 1))
    t = load_model(teacher, c.model_options(arch, allow_code, pretrained, model_kwargs=model_kwargs), dev) if teacher is not None else None
    with c.progress_bar() as p:
        task = p.add_task(f"distill {t.name if t else 'no teacher'} -> {arch_info.name}", total=None)

        def on_epoch(s):
            p.update(task, description=f"distill {t.name if t else 'no teacher'} -> {arch_info.name}: loss {s['loss']:.3f}, "
                                       f"train acc {s['train_accuracy']:.1%}, test acc {s['test_accuracy']:.1%}")

        res = run_distill(t, arch_info, train, test, config, progress=c.task_callback(p, "epochs"), on_epoch=on_epoch)
    save_student(res, output)
    student_name = name or output.stem
    sat_value, sat_with = None, []
    if sat_m is not None:
        proxies = student_proxies(student_name, sat_m[0], sat_proxy) or student_proxies(arch_info.name, sat_m[0], sat_proxy)
        if t is None:
            c.warn("no teacher: SAT(teacher, student) is not defined")
        else:
            sat_value, sat_with = teacher_student_sat(sat_m[0], sat_m[1], t.name, proxies)
            if not sat_with:
                missing = t.name if t.name not in sat_m[0] else f"a stand-in for the student ({student_name}, {arch_info.name})"
                c.warn(f"{missing} is not in {sat}; SAT left empty (use --sat-proxy NAME)")
                sat_value = None
    if metrics is not None:
        append_metrics(metrics, metrics_row(res, student_name, str(output), sat_value, sat_with))
    m = res.metrics
    teacher_txt = f"teacher {m['teacher']} {m['teacher_accuracy']:.1%}, " if t is not None else "no teacher, "
    sat_txt = f", SAT(teacher, student) {sat_value:.2f} (via {', '.join(sat_with)})" if sat_value is not None else ""
    c.info(f"student {arch_info.name} ({m['mode']}, {m['epochs']} epochs): test accuracy {m['student_accuracy']:.1%}; "
           f"{teacher_txt}{m['train_seconds']:.0f} s{sat_txt}; wrote {output}")


def _check_metrics_table(path: Path) -> None:
    """An existing --metrics file must be a distill metrics table, since the run appends a row to it."""
    from satkit.analysis.distill import METRIC_COLUMNS
    from satkit.errors import InputFileError
    from satkit.io.tables import read_table

    if str(path) == "-" or not path.is_file() or path.stat().st_size == 0:
        return
    if read_table(path, "distillation metrics table").columns != METRIC_COLUMNS:
        raise InputFileError(f"{path}: not a satkit distill metrics table (columns differ); choose another --metrics file")
