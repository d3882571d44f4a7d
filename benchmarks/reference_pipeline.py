"""satkit study vs a reference pipeline written with torchattacks, at an ImageNet-like accuracy (~75 %).

    pip install --no-deps torchattacks   # its requests pin would downgrade requests (docs/performance.md)
    python benchmarks/reference_pipeline.py                   # whole digits test set (540 images)
    python benchmarks/reference_pipeline.py --n 200 --json ref.json

Issue target: passes of a satkit study / passes of the reference pipeline <= 0.5
at ~75 % accuracy (hardware independent), and the wall-time ratio, measured on
the same models and data in one run (same process, same torch threads).

Accuracy regime: the 10 models of the default digits zoo on a data file of the
digits test set (canvas 16) where 25 % of the labels (seeded) are replaced by
another class, so every model is right on ~75 % of the samples (the zoo models
are ~97-99 % accurate on the true labels).

The reference, as a careful researcher would write it: each model loaded once and
attacked with ``torchattacks.PGD`` (eps 0.1, alpha 2.5 * eps / steps, 50 steps,
random start) on every sample, batch 128, adversarials kept in memory; then each
target loaded once, its clean predictions and its predictions on every source's
adversarials computed on all samples; SAT from those predictions (formula of
``satkit.matrix.sat``, eps_s 1). Passes: per model n * steps forward+backward
(the attack) and n clean forwards; per (source, target) pair n forwards.

satkit: ``run_study`` with the same models, data and attack (no analyses, no
per-sample tables). Passes from the study itself: per attack job (its file's
``stats.attacked``) attacked * steps forward+backward, n clean forwards and
``attacked`` forwards on the stored adversarials; per transfer job its
``forward_samples`` (|X_AB| adversarial forwards per pair; the target's clean
predictions come from its own attack file), cross-checked against the transfer
tables' ``n_both``.

Wall time on a busy machine: torch's OpenMP (libgomp) threads spin while they
wait, and when other processes hold the cores that spinning costs a plain loop
like the reference's several times its work (measured here: a 20-step
torchattacks PGD on 128 digits took 2.5-7x the CPU time of satkit's runner, whose
background prefetch thread happens to switch libgomp to its throttled spin).
``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) removes that for both
pipelines; the wall-time ratio is only meaningful with it, or on a quiet machine:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/reference_pipeline.py --json ref.json

Forward-equivalents count a backward as 2 forwards (the usual convention, so a
forward+backward = 3); with frozen parameters the backward computes only the
input gradient and costs less, so the ratio at 1 forward per backward is given
too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

EPS = 0.1
STEPS = 50
BATCH = 128
WRONG = 0.25


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_data(path: Path, n: int | None, seed: int = 0) -> dict:
    """The digits test set with 25 % of the labels (seeded) replaced by another class."""
    from safetensors.torch import save_file

    from satkit.data.loaders import load_digits_set

    clean = load_digits_set("test", canvas=16, n=n)
    m = len(clean)
    g = torch.Generator().manual_seed(seed)
    flip = torch.randperm(m, generator=g)[: round(WRONG * m)]
    labels = clean.labels.clone()
    labels[flip] = (labels[flip] + torch.randint(1, clean.num_classes, (len(flip),), generator=g)) % clean.num_classes
    save_file({"images": clean.images.contiguous(), "labels": labels, "ids": clean.ids.contiguous()}, str(path))
    return {"n": m, "wrong_labels": len(flip), "images": clean.images, "labels": labels, "true_labels": clean.labels}


def sat_from_predictions(names: list[str], y: torch.Tensor, clean_pred: dict, adv_pred: dict, eps_s: float = 1.0):
    """SAT(A, B) = ln(max(eps_s, 100 / (2 |X_AB|) * sum_{X_AB} [1(A(x_B) != y) + 1(B(x_A) != y)])), natural log, percent."""
    k = len(names)
    S = np.full((k, k), np.nan)
    n_both = np.zeros((k, k), dtype=np.int64)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            both = (clean_pred[a] == y) & (clean_pred[b] == y)
            nb = int(both.sum())
            n_both[i, j] = nb
            if nb == 0:
                continue
            f_ab = int((both & (adv_pred[(a, b)] != y)).sum())  # B on A's adversarials
            f_ba = int((both & (adv_pred[(b, a)] != y)).sum())  # A on B's adversarials
            S[i, j] = math.log(max(eps_s, 100.0 * (f_ab + f_ba) / (2.0 * nb)))
    return S, n_both


def predict(net: torch.nn.Module, imgs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([net(imgs[s:s + BATCH]).argmax(1) for s in range(0, len(imgs), BATCH)])


def reference(models: list[str], images: torch.Tensor, labels: torch.Tensor) -> dict:
    import torchattacks

    from satkit.models import load_model

    x = images.float() / 255.0
    y = labels
    n = len(y)
    names, advs = [], {}
    fb = fwd = 0
    t0 = time.perf_counter()
    for spec in models:  # wave 1: each model once, every sample attacked
        lm = load_model(spec)
        names.append(lm.name)
        atk = torchattacks.PGD(lm.module, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)
        advs[lm.name] = torch.cat([atk(x[s:s + BATCH], y[s:s + BATCH]) for s in range(0, n, BATCH)])
        fb += n * STEPS
        log(f"reference: attacked {lm.name} ({time.perf_counter() - t0:.0f} s)")
        del lm, atk
    t_attack = time.perf_counter() - t0
    clean_pred, adv_pred = {}, {}
    t0 = time.perf_counter()
    for spec, tname in zip(models, names):  # wave 2: each target once, on every attack, all samples
        lm = load_model(spec)
        net = lm.module.eval()
        clean_pred[tname] = predict(net, x)
        fwd += n
        for sname in names:
            adv_pred[(sname, tname)] = predict(net, advs[sname])
            fwd += n
        log(f"reference: evaluated target {tname} ({time.perf_counter() - t0:.0f} s)")
        del lm, net
    t_transfer = time.perf_counter() - t0
    S, n_both = sat_from_predictions(names, y, clean_pred, adv_pred)
    acc = {k: float((v == y).float().mean()) for k, v in clean_pred.items()}
    return {"names": names, "S": S, "n_both": n_both, "fwd_bwd": fb, "forward": fwd, "seconds": t_attack + t_transfer,
            "seconds_attack": t_attack, "seconds_transfer": t_transfer, "accuracy": acc}


def satkit_study(models: list[str], data: Path, out: Path, n: int) -> dict:
    import polars as pl

    from satkit.attacks import AttackParams
    from satkit.study import StudyConfig, run_study

    cfg = StudyConfig.create(models, out, data=str(data), params=AttackParams(eps=EPS, steps=STEPS), analyses=False,
                             per_sample=False)
    t0 = time.perf_counter()
    res = run_study(cfg, on_event=lambda e: e.done == e.total and e.stage in ("attack", "transfer") and log(
        f"satkit: {e.stage} {e.model} done ({time.perf_counter() - t0:.0f} s)"))
    seconds = time.perf_counter() - t0
    fb = fwd_attack = fwd_transfer = 0
    attacked = {}
    for j in res.jobs:
        if j.kind == "attack":
            a = int(j.stats["attacked"])
            assert j.ran and j.forward_samples == n + a * (STEPS + 1), (j.name, j.forward_samples)  # the job's own count
            attacked[j.name] = a
            fb += a * STEPS
            fwd_attack += n + a
        else:
            fwd_transfer += j.forward_samples
    tables = pl.concat([pl.read_csv(cfg.dir.transfer_path(m)) for m in models])
    sum_both = int(tables["n_both"].sum())
    mat = res.matrix
    return {"names": mat.names, "S": mat.values, "n_both": _n_both_matrix(mat.names, tables),
            "fwd_bwd": fb, "forward": fwd_attack + fwd_transfer, "forward_attack": fwd_attack, "forward_transfer": fwd_transfer,
            "sum_n_both": sum_both, "transfer_clean_forwards": fwd_transfer - sum_both, "attacked": attacked,
            "seconds": seconds, "stage_seconds": dict(res.seconds), "model_loads": res.model_loads,
            "accuracy": {k: float(v["source_clean_accuracy"]) for k, v in res.attack_stats.items()}}


def _n_both_matrix(names: list[str], tables) -> np.ndarray:
    idx = {m: i for i, m in enumerate(names)}
    out = np.zeros((len(names), len(names)), dtype=np.int64)
    for r in tables.iter_rows(named=True):
        out[idx[r["source"]], idx[r["target"]]] = r["n_both"]
    return out


def run(n: int | None, tmp: Path) -> dict:
    from satkit.study.config import default_models

    models = default_models()
    data = tmp / "labels25.safetensors"
    d = make_data(data, n)
    torch.manual_seed(0)  # torchattacks' random start
    load = [os.getloadavg()[0]]
    ref = reference(models, d["images"], d["labels"])
    load.append(os.getloadavg()[0])
    sk = satkit_study(models, data, tmp / "study", d["n"])
    load.append(os.getloadavg()[0])
    order = [sk["names"].index(x) for x in ref["names"]]  # the study sorts its matrix by name
    sk["S"], sk["n_both"] = sk["S"][np.ix_(order, order)], sk["n_both"][np.ix_(order, order)]
    m = d["n"]
    k = len(models)
    assert ref["fwd_bwd"] == k * m * STEPS and ref["forward"] == k * m + k * k * m

    def equiv(r: dict, bwd: float) -> float:
        return r["fwd_bwd"] * (1 + bwd) + r["forward"]

    S_ref, S_sk = ref["S"], sk["S"]
    ok = ~np.isnan(S_ref) & ~np.isnan(S_sk)
    off = ok & ~np.eye(k, dtype=bool)
    passes = {
        "reference": {"fwd_bwd": ref["fwd_bwd"], "forward": ref["forward"], "forward_equiv": equiv(ref, 2)},
        "satkit": {"fwd_bwd": sk["fwd_bwd"], "forward": sk["forward"], "forward_attack": sk["forward_attack"],
                   "forward_transfer": sk["forward_transfer"], "forward_equiv": equiv(sk, 2)},
    }
    ratio = {
        "fwd_bwd": sk["fwd_bwd"] / ref["fwd_bwd"],
        "forward": sk["forward"] / ref["forward"],
        "forward_equiv": equiv(sk, 2) / equiv(ref, 2),
        "forward_equiv_bwd1": equiv(sk, 1) / equiv(ref, 1),
        "images_through_a_model": (sk["fwd_bwd"] + sk["forward"]) / (ref["fwd_bwd"] + ref["forward"]),
        "wall": sk["seconds"] / ref["seconds"],
        "wall_attack_transfer": (sk["stage_seconds"].get("attack", 0) + sk["stage_seconds"].get("transfer", 0)) / ref["seconds"],
    }
    return {
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "loadavg_1min": load,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "models": models, "n": m, "wrong_labels": d["wrong_labels"], "eps": EPS, "steps": STEPS, "batch": BATCH,
        "accuracy": {"reference": ref["accuracy"], "satkit": sk["accuracy"]},
        "passes": passes, "ratio": ratio, "target": 0.5, "met": ratio["forward_equiv"] <= 0.5,
        "seconds": {"reference": ref["seconds"], "reference_attack": ref["seconds_attack"],
                    "reference_transfer": ref["seconds_transfer"], "satkit": sk["seconds"], "satkit_stages": sk["stage_seconds"]},
        "satkit_counts": {"attacked": sk["attacked"], "sum_n_both": sk["sum_n_both"],
                          "transfer_clean_forwards": sk["transfer_clean_forwards"], "model_loads": sk["model_loads"]},
        "agreement": {
            "n_both_equal": bool((ref["n_both"] == sk["n_both"]).all()),
            "n_both_max_abs_diff": int(np.abs(ref["n_both"] - sk["n_both"]).max()),
            "pearson_r": float(np.corrcoef(S_ref[ok], S_sk[ok])[0, 1]),
            "pearson_r_offdiag": float(np.corrcoef(S_ref[off], S_sk[off])[0, 1]),
            "max_abs_diff": float(np.abs(S_ref[ok] - S_sk[ok]).max()),
            "mean_abs_diff": float(np.abs(S_ref[ok] - S_sk[ok]).mean()),
            "cells": int(ok.sum()),
        },
        "sat_reference": np.where(np.isnan(S_ref), None, S_ref).tolist(),
        "sat_satkit": np.where(np.isnan(S_sk), None, S_sk).tolist(),
    }


def print_table(r: dict) -> None:
    acc = r["accuracy"]["satkit"]
    print(f"{len(r['models'])} default zoo models, digits test set n = {r['n']} with {r['wrong_labels']} labels "
          f"({r['wrong_labels'] / r['n']:.0%}) replaced by another class; accuracy {min(acc.values()):.3f}-{max(acc.values()):.3f} "
          f"(mean {np.mean(list(acc.values())):.3f}); PGD eps {r['eps']}, {r['steps']} steps, batch {r['batch']}; "
          f"torch threads {r['machine']['threads']}, OMP_WAIT_POLICY {r['machine'].get('OMP_WAIT_POLICY')}, "
          f"1-min load average {', '.join(f'{x:.1f}' for x in r['machine']['loadavg_1min'])}\n")
    p, q = r["passes"]["reference"], r["passes"]["satkit"]
    ra = r["ratio"]
    print(f"{'':28} {'reference':>12} {'satkit':>12} {'satkit/ref':>10}")
    print(f"{'forward+backward passes':28} {p['fwd_bwd']:12,} {q['fwd_bwd']:12,} {ra['fwd_bwd']:10.3f}")
    print(f"{'forward-only passes':28} {p['forward']:12,} {q['forward']:12,} {ra['forward']:10.3f}")
    print(f"{'forward-equivalents (bwd=2)':28} {p['forward_equiv']:12,.0f} {q['forward_equiv']:12,.0f} {ra['forward_equiv']:10.3f}")
    print(f"{'  (bwd=1)':28} {'':>12} {'':>12} {ra['forward_equiv_bwd1']:10.3f}")
    s = r["seconds"]
    st = s["satkit_stages"]
    print(f"{'wall time s':28} {s['reference']:12.1f} {s['satkit']:12.1f} {ra['wall']:10.3f}")
    print(f"{'  attack + transfer only':28} {s['reference']:12.1f} {st.get('attack', 0) + st.get('transfer', 0):12.1f} "
          f"{ra['wall_attack_transfer']:10.3f}")
    print(f"  reference: attack {s['reference_attack']:.1f} s, targets {s['reference_transfer']:.1f} s; satkit stages: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in st.items()))
    c = r["satkit_counts"]
    print(f"  satkit: attack forwards {q['forward_attack']:,} (n clean + attacked adversarial checks), transfer forwards "
          f"{q['forward_transfer']:,} (sum |X_AB| = {c['sum_n_both']:,}, clean passes {c['transfer_clean_forwards']}), "
          f"{c['model_loads']} model loads")
    a = r["agreement"]
    print(f"\nSAT matrices ({a['cells']} cells): Pearson r {a['pearson_r']:.4f} (off-diagonal {a['pearson_r_offdiag']:.4f}), "
          f"max |diff| {a['max_abs_diff']:.3f}, mean |diff| {a['mean_abs_diff']:.3f}; |X_AB| equal in every cell: {a['n_both_equal']}")
    print(f"\npasses satkit / reference (forward-equivalents): {ra['forward_equiv']:.3f} "
          f"(target <= {r['target']}: {'met' if r['met'] else 'NOT met'}); wall time {ra['wall']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None, help="images (stratified sample of the digits test set; default: all)")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run(a.n, Path(d))
    print_table(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
