"""`satkit study --precision W` against the fixed full sample, on the digits zoo (docs/performance.md).

    python benchmarks/adaptive_precision.py ROOT [--data digits:all] [--fixed FIXED_STUDY] [--widths 0.3 0.2 0.1] [--chunk 100]

Runs the adaptive study in ROOT for each W from the loosest to the tightest (each
run resumes the chunks the previous ones made, so the wall time of W is the sum
of the runs up to it: what a fresh run at W costs), and the fixed study (default
settings, every image) in FIXED_STUDY unless it is already there. Prints, per W:
images used, wall time, the widest half-width, Pearson r of the matrix with the
fixed one, and the ARI of their spectral clusterings (the same k: the fixed
matrix's eigengap choice).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from satkit.analysis.cluster import spectral_cluster
from satkit.analysis.compare import compare_matrices
from satkit.matrix.square import read_similarity_matrix
from satkit.study import StudyConfig, run_study


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--fixed", type=Path, default=None)
    ap.add_argument("--widths", type=float, nargs="+", default=[0.3, 0.2, 0.1])
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--data", default="digits", help="digits (540 test images) or digits:all (1797)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    fixed_dir = a.fixed or a.root / "fixed"
    t0 = time.perf_counter()
    fixed = run_study(StudyConfig.create(None, fixed_dir, data=a.data, analyses=False))
    fixed_seconds = time.perf_counter() - t0 if fixed.attacks_run else None
    names_f, F = read_similarity_matrix(fixed_dir / "sat.csv")
    k = spectral_cluster(names_f, F).k
    rows, total = [], 0.0
    for w in sorted(a.widths, reverse=True):
        t0 = time.perf_counter()
        res = run_study(StudyConfig.create(None, a.root / "adaptive", data=a.data, analyses=False, precision=w,
                                           chunk=a.chunk)).adaptive
        total += time.perf_counter() - t0
        names_a, A = read_similarity_matrix(a.root / "adaptive" / "sat.csv")
        c = compare_matrices(names_f, F, names_a, A, k=k)
        rows.append({"W": w, "images": res["images_used"], "available": res["images_available"], "seconds": round(total, 1),
                     "max_half_width": res["max_half_width"] if res["max_half_width"] is not None else float("inf"), "stopped": res["stopped"],
                     "pearson": c.pearson, "ari": c.ari, "k": k})
    print(f"| W | images used (of {rows[0]['available']}) | wall time | widest half-width | Pearson r vs full | ARI vs full (k={k}) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['W']:g} | {r['images']} | {r['seconds']:.0f} s | {r['max_half_width']:.3f} ({r['stopped']}) "
              f"| {r['pearson']:.3f} | {r['ari']:.2f} |")
    fs = f"{fixed_seconds:.0f} s" if fixed_seconds is not None else "(reused)"
    print(f"| full sample | {rows[0]['available']} | {fs} | - | 1 | 1 |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "fixed_seconds": fixed_seconds}, indent=2))


if __name__ == "__main__":
    main()
