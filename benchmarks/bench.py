"""satkit benchmark suite (outside the test run).

    pip install --no-deps torchattacks && pip install adversarial-robustness-toolbox   # docs/performance.md: why --no-deps
    python benchmarks/bench.py --out benchmarks/results.json      # prints a table, writes JSON
    python benchmarks/bench.py --only pgd transfer --quick --batch 2 --steps 2 --repeats 1   # parts, small
      (a partial run prints and writes only what it measured, to benchmarks/results.partial.json
       unless --out; --merge updates the parts of an existing --out JSON instead)

Measures in ONE run, same machine, same models, batch, steps and eps:

1. PGD images/s: satkit vs torchattacks.PGD vs ART ProjectedGradientDescentPyTorch,
   and the success rate each reaches (labels = the model's clean predictions, so
   random-weight models work).
2. PGD step time / one inference forward, and against the floor: a bare loop of
   forward + gradient to the input with frozen parameters.
3. transfer throughput vs a bare ``inference_mode`` loop over the same images.
4. the whole ``satkit attack`` job from an image folder vs the attack loop alone
   (timed right before and right after the job: this shared machine's speed drifts).
5. peak RSS of ``satkit transfer`` over 2 vs 8 attack files (memory-mapped reads).
6. counted work of a study: model loads and forward passes against the minimum.

Models: resnet18 (CNN) and vit_small_patch16_224 (ViT), random weights, 224 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def wrapped(name: str):
    from satkit.models import ModelOptions, load_model

    return load_model(name, ModelOptions(pretrained=False))


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_pgd(name: str, batch: int, steps: int, eps: float, repeats: int) -> dict:
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    from satkit.attacks.pgd import pgd_linf

    lm = wrapped(name)
    net = lm.module
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 3, 224, 224), generator=g)
    with torch.no_grad():  # not inference_mode: y is used under autograd below
        y = net(x).argmax(1)
    alpha = 2.5 * eps / steps
    init = (torch.rand(x.shape, generator=g) * 2 - 1) * eps

    def forward():
        with torch.inference_mode():
            net(x)

    def floor():
        for _ in range(steps):
            xi = x.clone().requires_grad_(True)
            loss = F.cross_entropy(net(xi), y, reduction="sum")
            torch.autograd.grad(loss, xi)

    out = {}

    def satkit_run():
        out["satkit"] = pgd_linf(net, x, y, eps=eps, steps=steps, alpha=alpha, init=init)

    ta = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def ta_run():
        out["torchattacks"] = ta(x, y)

    clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 224, 224), nb_classes=lm.num_classes,
                            clip_values=(0.0, 1.0), device_type="cpu")
    art_attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, batch_size=batch,
                                                 num_random_init=1, verbose=False)
    xn, yn = x.numpy(), y.numpy()

    def art_run():
        out["art"] = torch.from_numpy(art_attack.generate(xn, yn))

    t_fwd = timeit(forward, repeats)
    t_floor = timeit(floor, repeats)
    t = {k: timeit(f, repeats) for k, f in (("satkit", satkit_run), ("torchattacks", ta_run), ("art", art_run))}
    succ = {}
    for k, adv in out.items():
        with torch.inference_mode():
            succ[k] = float((net(adv).argmax(1) != y).float().mean())
    step = t["satkit"] / steps
    return {
        "model": name, "batch": batch, "steps": steps, "eps": eps,
        "forward_s": t_fwd, "floor_step_s": t_floor / steps,
        "step_s": {k: v / steps for k, v in t.items()},
        "images_per_s": {k: batch / v for k, v in t.items()},
        "success_rate": succ,
        "step_over_forward": step / t_fwd,
        "step_over_floor": step / (t_floor / steps),
        "speedup_vs_torchattacks": t["torchattacks"] / t["satkit"],
        "speedup_vs_art": t["art"] / t["satkit"],
    }


def make_attack_files(tmp: Path, n: int, k: int, labels_from=None, prefix: str = "a") -> list[Path]:
    from satkit.attacks.runner import ATTACK_FORMAT
    from satkit.io.fingerprint import fingerprint_of
    from satkit.io.tensorfile import write_tensor_file

    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 1000, (n,), generator=g)
    if labels_from is not None:  # the model's own clean predictions: X_AB = every sample, the worst case
        with torch.inference_mode():
            labels = torch.cat([labels_from(clean[s:s + 32].float() / 255).argmax(1) for s in range(0, n, 32)])
    ids = torch.arange(n)
    fp = fingerprint_of(clean, labels, ids)
    paths = []
    from satkit.attacks import AttackParams

    logits = torch.nn.functional.one_hot(labels, 1000).float()  # the source "gets every sample right"
    for i in range(k):
        adv = (clean.int() + torch.randint(-8, 9, clean.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        prov = {"model": {"name": f"src{i}", "weights_id": f"x{i}"},
                "data": {"fingerprint": fp, "num_classes": 1000, "n": n, "source": "synthetic", "canvas": [3, 224, 224]},
                "attack": AttackParams(eps=8 / 255).to_dict(), "storage_dtype": "uint8", "amp": "off", "attack_key": f"k{i}"}
        p = tmp / f"{prefix}{i}.safetensors"
        write_tensor_file(p, ATTACK_FORMAT, {"clean": clean, "adv": adv, "labels": labels, "ids": ids, "clean_logits": logits,
                                             "source_correct": torch.ones(n, dtype=torch.bool),
                                             "source_adv_correct": torch.zeros(n, dtype=torch.bool)}, prov)
        paths.append(p)
    return paths


def bench_transfer(name: str, tmp: Path, n: int, batch: int) -> dict:
    from satkit.attacks.quantize import as_float
    from satkit.transfer import open_attack_files, run_transfer

    lm = wrapped(name)
    files = make_attack_files(tmp, n, 1, labels_from=lm.module, prefix=f"t_{name}_")
    opened = open_attack_files(files[:1])
    t0 = time.perf_counter()
    res = run_transfer(lm, opened, batch_size=batch)
    t_transfer = time.perf_counter() - t0
    adv = opened[0].get("adv")
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(adv), batch):
            lm.module(as_float(adv[s:s + batch]))
            lm.module(as_float(adv[s:s + batch]))  # the transfer also runs a clean pass here (no own attack file)
    t_bare = time.perf_counter() - t0
    return {"model": name, "images": len(adv), "forward_samples": res.forward_samples, "transfer_s": t_transfer,
            "bare_loop_s": t_bare, "transfer_over_bare": t_bare / t_transfer}


def peak_rss_transfer(files: list[Path], tmp: Path) -> int:
    code = (
        "import resource,sys;from satkit.cli.app import app;"
        "sys.argv=['satkit','-q','transfer','resnet18','--random-init',*sys.argv[1:-1],'-o',sys.argv[-1]];"
        "\ntry:\n app()\nexcept SystemExit:\n pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    r = subprocess.run([sys.executable, "-c", code, *map(str, files), str(tmp / "t.csv")], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) * 1024


def bench_attack_job(tmp: Path, n: int, steps: int) -> dict:
    """The real ``satkit attack`` CLI in a new process vs run_attack alone on the decoded images.

    This machine's speed drifts by tens of percent over minutes (shared host), so
    the loop is timed twice, right before and right after the job, and
    ``attack_loop_s`` is the mean of the two. Also recorded: CPU seconds, the load
    average, and two fixed costs measured apart (a new process importing what the
    job imports and building the model; decoding the folder with ``load_data``).
    """
    from PIL import Image

    from satkit.attacks import AttackParams, run_attack
    from satkit.data import load_data

    root = tmp / "folder"
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    t0 = time.perf_counter()
    data = load_data(str(root))
    t_decode = time.perf_counter() - t0
    lm = wrapped("resnet18")

    def loop() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        # attack_all: random weights get (almost) no sample right, and by default only correct samples are attacked
        run_attack(lm, data, AttackParams(steps=steps, attack_all=True), batch_size=32)
        return time.perf_counter() - t0, time.process_time() - c0

    load_before = os.getloadavg()
    loop_before = loop()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "satkit", "-q", "attack", "resnet18", "--random-init", "--data", str(root),
                    "--steps", str(steps), "--attack-all", "--batch-size", "32", "-o", str(tmp / "job.safetensors")], check=True)
    t_job = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    loop_after = loop()
    load_after = os.getloadavg()
    t_loop = (loop_before[0] + loop_after[0]) / 2
    startup = ("import satkit.cli.app, satkit.attacks, satkit.data; from satkit.models import ModelOptions, load_model; "
               "load_model('resnet18', ModelOptions(pretrained=False))")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", startup], check=True)
    t_startup = time.perf_counter() - t0
    return {"images": n, "steps": steps, "job_s": t_job, "attack_loop_s": t_loop, "loop_over_job": t_loop / t_job,
            "attack_loop_runs_s": [loop_before[0], loop_after[0]],
            "job_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            "attack_loop_cpu_s": (loop_before[1] + loop_after[1]) / 2,
            "startup_s": t_startup, "decode_s": t_decode, "loadavg_1min": [load_before[0], load_after[0]]}


def bench_study_counts(tmp: Path) -> dict:
    from satkit.attacks import AttackParams
    from satkit.study import StudyConfig, run_study

    models = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1", "digits/convmixer-s1"]
    res = run_study(StudyConfig.create(models, tmp / "study", params=AttackParams(eps=0.1, steps=5), n=100, analyses=False))
    both = int(res.matrix.long["n_both"].sum() * 2 - res.matrix.long.filter(res.matrix.long["a"] == res.matrix.long["b"])["n_both"].sum())
    n = len(models)
    # the transfer jobs' own count (the attack jobs' depends on how many samples each source gets right)
    transfer_forward = sum(j.forward_samples for j in res.jobs if j.kind == "transfer")
    return {"models": n, "model_loads": res.model_loads, "min_model_loads": 2 * n,
            "transfer_forward": transfer_forward, "min_transfer_forward": both}


PARTS = ["pgd", "transfer", "memory", "job", "counts", "study"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON to write (default: benchmarks/results.json for a full run, "
                         "benchmarks/results.partial.json with --only, so a partial run never overwrites a full one)")
    ap.add_argument("--merge", action="store_true",
                    help="update the parts of an existing --out JSON that this run measured and keep the others "
                         "(the table still shows only this run)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--only", choices=PARTS, nargs="+", help="run only these parts")
    a = ap.parse_args()
    out = a.out or Path("benchmarks/results.partial.json" if a.only else "benchmarks/results.json")
    torch.manual_seed(0)
    res: dict = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                             "python": platform.python_version(), "cuda": torch.cuda.is_available()}}
    eps = 8 / 255
    want = set(a.only or PARTS)
    if "pgd" in want:
        res["pgd"] = [bench_pgd(m, a.batch, a.steps, eps, a.repeats) for m in ("resnet18", "vit_small_patch16_224")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "transfer" in want:
            res["transfer"] = [bench_transfer(m, tmp, 64 if a.quick else 256, a.batch) for m in ("resnet18", "vit_small_patch16_224")]
        if "memory" in want:
            files = make_attack_files(tmp, 64 if a.quick else 256, 8)
            res["transfer_peak_rss"] = {"files_2": peak_rss_transfer(files[:2], tmp), "files_8": peak_rss_transfer(files, tmp),
                                        "file_bytes": files[0].stat().st_size}
        if "job" in want:
            res["attack_job"] = bench_attack_job(tmp, 100 if a.quick else 500, 2 if a.quick else a.steps)
        if "counts" in want:
            res["study_counts"] = bench_study_counts(tmp)
        if "study" in want:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from study_scale import run_all

            res["study_scale"] = run_all(tmp)
    saved = res
    if a.merge and out.exists():  # this run's parts replace the old ones; parts it did not run are kept
        saved = {**json.loads(out.read_text()), **res}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=2))
    print_table(res)
    print(f"\nwritten: {out}" + (" (merged with the parts already there)" if saved is not res else ""))


def print_table(res: dict) -> None:
    """Every section that is in ``res``, and only those: a partial run (--only) prints what it measured."""
    if "machine" in res:
        print(f"machine: {res['machine']}")
    if "pgd" in res:
        print("\nPGD (CPU fp32), per step; ratios > 1 mean satkit is faster")
        print(f"{'model':24} {'fwd s':>7} {'floor s':>8} {'satkit s':>9} {'step/fwd':>9} {'step/floor':>10} "
              f"{'vs TA':>6} {'vs ART':>7}  success (satkit/TA/ART)")
        for r in res["pgd"]:
            s = r.get("success_rate", {})
            succ = "/".join(f"{s[k]:.2f}" if k in s else "-" for k in ("satkit", "torchattacks", "art"))
            print(f"{r['model']:24} {r['forward_s']:7.3f} {r['floor_step_s']:8.3f} {r['step_s']['satkit']:9.3f} {r['step_over_forward']:9.2f} "
                  f"{r['step_over_floor']:10.3f} {r['speedup_vs_torchattacks']:6.2f} {r['speedup_vs_art']:7.2f}  {succ}")
    if "transfer" in res:
        print("\ntransfer vs bare inference loop (same images, same batches)")
        for r in res["transfer"]:
            print(f"{r['model']:24} {r['images']} images: transfer {r['transfer_s']:.2f} s, bare {r['bare_loop_s']:.2f} s, ratio {r['transfer_over_bare']:.2f}")
    if "transfer_peak_rss" in res:
        m = res["transfer_peak_rss"]
        print(f"\ntransfer peak RSS: 2 files {m['files_2'] / 2**20:.0f} MiB, 8 files {m['files_8'] / 2**20:.0f} MiB "
              f"(each file {m['file_bytes'] / 2**20:.0f} MiB)")
    if "attack_job" in res:
        j = res["attack_job"]
        print(f"\nwhole attack job from a folder of {j['images']} JPEGs: {j['job_s']:.1f} s; "
              f"attack loop alone {j['attack_loop_s']:.1f} s; ratio {j['loop_over_job']:.2f}")
        if "job_cpu_s" in j:
            before, after = j["attack_loop_runs_s"]
            print(f"  loop before / after the job {before:.1f} / {after:.1f} s; CPU s: job {j['job_cpu_s']:.1f}, loop {j['attack_loop_cpu_s']:.1f}; "
                  f"new process imports + model {j['startup_s']:.1f} s; load_data (decode) {j['decode_s']:.1f} s; "
                  f"1-min load average {j['loadavg_1min'][0]:.1f} -> {j['loadavg_1min'][1]:.1f}")
    if "study_counts" in res:
        c = res["study_counts"]
        print(f"\nstudy of {c['models']} models: {c['model_loads']} model loads (minimum {c['min_model_loads']}), "
              f"{c['transfer_forward']} transfer forwards (minimum sum |X_AB| = {c['min_transfer_forward']})")
    if "study_scale" in res:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from study_scale import print_scale

        print_scale(res["study_scale"])


if __name__ == "__main__":
    main()
