"""Attack time when the source is wrong on half the samples (satkit attacks only the samples it gets right).

    python benchmarks/skip_bench.py                     # prints a table
    python benchmarks/skip_bench.py --json skip.json    # and writes the numbers

Issue target: attack job time beyond start-up, on data where the source is right on
half the samples, <= 0.6x the time with all samples right (same model, same n,
measured in one run).

Two data files are built from the digits test set (canvas 16), both holding the
same images (the samples ``digits/resnet-s1`` classifies correctly, with their ids):

- A: the true labels: the source is right on 100 %;
- B: exactly half of the labels (seeded) replaced by another class: right on 50 %.

Each job is ``satkit.jobs.attack_into_file(AttackJob("digits/resnet-s1", ...), out)``
(model load, checks, clean pass, attack, adversarial check, file write), timed with
50 PGD steps and with 1 step; "beyond start-up" is t(50 steps) - t(1 step) on the
same file, i.e. the 49 extra steps (start-up = everything the 1-step job does).
After one untimed warm-up job, the runs are interleaved (A, B, B --attack-all,
for each steps setting, per repeat; the order rotates from repeat to repeat, so
drift of a shared machine's speed does not always hit the same case) and each
time is the median over the repeats. Wall time and the process's CPU time are
both reported: on a busy machine CPU time is the steadier of the two. The control is B with
``attack_all=True``: every sample attacked, so ~1.0x A.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

MODEL = "digits/resnet-s1"
EPS = 0.1
STEPS = 50


def make_files(tmp: Path, seed: int = 0) -> dict:
    """Data files A (source right on 100 %) and B (right on exactly 50 %), same images and ids."""
    from safetensors.torch import save_file

    from satkit.data.loaders import load_digits_set
    from satkit.models import load_model

    clean = load_digits_set("test", canvas=16)
    lm = load_model(MODEL)
    pred = lm.predict_logits(clean.images, 128).argmax(1)
    right = pred == clean.labels
    images, labels, ids = clean.images[right].contiguous(), clean.labels[right].contiguous(), clean.ids[right].contiguous()
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    flip = torch.randperm(n, generator=g)[: n // 2]
    wrong = labels.clone()
    wrong[flip] = (labels[flip] + torch.randint(1, clean.num_classes, (len(flip),), generator=g)) % clean.num_classes
    assert int((wrong != labels).sum()) == n // 2
    a, b = tmp / "all_right.safetensors", tmp / "half_right.safetensors"
    save_file({"images": images, "labels": labels, "ids": ids}, str(a))
    save_file({"images": images, "labels": wrong, "ids": ids}, str(b))
    return {"A": a, "B": b, "n": n, "digits_test_n": len(clean), "source_test_accuracy": float(right.float().mean()),
            "B_wrong_labels": n // 2}


def run_job(data: Path, steps: int, attack_all: bool, out: Path) -> dict:
    from satkit.attacks import AttackParams
    from satkit.data import DataRequest
    from satkit.jobs import AttackJob, attack_into_file

    job = AttackJob(MODEL, data=DataRequest(str(data)), params=AttackParams(eps=EPS, steps=steps, attack_all=attack_all))
    c0, t0 = time.process_time(), time.perf_counter()
    o = attack_into_file(job, out)
    t, c = time.perf_counter() - t0, time.process_time() - c0
    out.unlink()
    return {"s": t, "cpu_s": c, "attacked": int(o.stats["attacked"]), "accuracy": float(o.stats["source_clean_accuracy"]),
            "success": float(o.stats["attack_success_rate"])}


CASES = {  # name: (file, attack_all)
    "A (100 % right)": ("A", False),
    "B (50 % right)": ("B", False),
    "B --attack-all": ("B", True),
}


def run(repeats: int, tmp: Path) -> dict:
    files = make_files(tmp)
    runs: dict[str, dict[int, list[dict]]] = {c: {STEPS: [], 1: []} for c in CASES}
    run_job(files["A"], 1, False, tmp / "out.safetensors")  # warm-up (first-call costs), not timed
    load = [os.getloadavg()[0]]
    names = list(CASES)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotated: no case always runs last (drift)
        for steps in (STEPS, 1):
            for case in order:
                f, attack_all = CASES[case]
                runs[case][steps].append(run_job(files[f], steps, attack_all, tmp / "out.safetensors"))
        load.append(os.getloadavg()[0])
    rows = {}
    for case in CASES:
        full = statistics.median(x["s"] for x in runs[case][STEPS])
        start = statistics.median(x["s"] for x in runs[case][1])
        cpu_full = statistics.median(x["cpu_s"] for x in runs[case][STEPS])
        cpu_start = statistics.median(x["cpu_s"] for x in runs[case][1])
        first = runs[case][STEPS][0]
        rows[case] = {"job_s": full, "startup_s": start, "beyond_startup_s": full - start,
                      "cpu_job_s": cpu_full, "cpu_startup_s": cpu_start, "cpu_beyond_startup_s": cpu_full - cpu_start,
                      "attacked": first["attacked"],
                      "accuracy": first["accuracy"], "success": first["success"],
                      "job_runs_s": [x["s"] for x in runs[case][STEPS]], "startup_runs_s": [x["s"] for x in runs[case][1]]}
    base = rows["A (100 % right)"]
    for row in rows.values():
        row["ratio_beyond_startup"] = row["beyond_startup_s"] / base["beyond_startup_s"]
        row["ratio_job"] = row["job_s"] / base["job_s"]
        row["cpu_ratio_beyond_startup"] = row["cpu_beyond_startup_s"] / base["cpu_beyond_startup_s"]
    ratio = rows["B (50 % right)"]["ratio_beyond_startup"]
    cpu_ratio = rows["B (50 % right)"]["cpu_ratio_beyond_startup"]
    return {
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "loadavg_1min": load},
        "model": MODEL, "eps": EPS, "steps": STEPS, "repeats": repeats,
        "startup": "the same job with steps=1 on the same file (load, checks, clean pass, 1 step, adversarial check, write)",
        "data": {k: v for k, v in files.items() if k not in ("A", "B")},
        "rows": rows, "ratio": ratio, "cpu_ratio": cpu_ratio, "target": 0.6, "met": ratio <= 0.6, "cpu_met": cpu_ratio <= 0.6,
    }


def print_table(res: dict) -> None:
    d = res["data"]
    print(f"{res['model']}, eps {res['eps']}, {res['steps']} steps, n = {d['n']} (the digits test samples it gets right, "
          f"{d['source_test_accuracy']:.1%} of {d['digits_test_n']}); medians of {res['repeats']} interleaved runs; "
          f"1-min load average {', '.join(f'{x:.1f}' for x in res['machine']['loadavg_1min'])}")
    print(f"start-up = {res['startup']}\n")
    print(f"{'':28} {'wall time (s)':^38} {'CPU time of the process (s)':^30}")
    print(f"{'data':18} {'accuracy':>4} {'attacked':>8} {'job':>7} {'start-up':>9} {'beyond':>7} {'ratio':>6} {'job ratio':>9}"
          f" {'job':>7} {'start-up':>9} {'beyond':>7} {'ratio':>6}")
    for case, r in res["rows"].items():
        print(f"{case:18} {r['accuracy']:8.2f} {r['attacked']:8d} {r['job_s']:7.2f} {r['startup_s']:9.2f} "
              f"{r['beyond_startup_s']:7.2f} {r['ratio_beyond_startup']:6.2f} {r['ratio_job']:9.2f} "
              f"{r['cpu_job_s']:7.2f} {r['cpu_startup_s']:9.2f} {r['cpu_beyond_startup_s']:7.2f} {r['cpu_ratio_beyond_startup']:6.2f}")
    c = res["rows"]["B --attack-all"]
    print(f"\nB / A beyond start-up: wall {res['ratio']:.2f} (target <= {res['target']}: {'met' if res['met'] else 'NOT met'}), "
          f"CPU {res['cpu_ratio']:.2f} ({'met' if res['cpu_met'] else 'NOT met'}); control B --attack-all / A: "
          f"wall {c['ratio_beyond_startup']:.2f}, CPU {c['cpu_ratio_beyond_startup']:.2f} (expected ~1.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run(a.repeats, Path(d))
    print_table(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
