"""Sweep PGD eps on the digits zoo: self-attack success and same- vs cross-architecture SAT.

    python benchmarks/eps_sweep.py --eps 0.05 0.1 0.15 0.2 0.3 --out /tmp/eps-sweep

Prints one row per eps and writes eps_sweep.json. Used to choose the digits
default eps (docs/study.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from satkit.attacks import AttackParams
from satkit.study import StudyConfig, default_models, run_study


def arch_of(name: str) -> str:
    return name.removeprefix("digits/").rsplit("-s", 1)[0]


def summarize(names, M):
    same, cross = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        (same if arch_of(names[i]) == arch_of(names[j]) else cross).append(M[i, j])
    return float(np.nanmean(same)), float(np.nanmean(cross)), len(same), len(cross)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("/tmp/eps-sweep"))
    a = ap.parse_args()
    rows = []
    for eps in a.eps:
        t0 = time.perf_counter()
        res = run_study(StudyConfig.create(default_models(), a.out / f"eps{eps}", params=AttackParams(eps=eps, steps=a.steps)))
        names, M = res.matrix.names, res.matrix.values
        same, cross, ns, nc = summarize(names, M)
        succ = {n: s["attack_success_rate"] for n, s in res.attack_stats.items()}
        row = {
            "eps": eps, "same_arch_mean_sat": same, "cross_arch_mean_sat": cross, "n_same": ns, "n_cross": nc,
            "min_self_success": min(succ.values()), "self_success": succ,
            "offdiag_sat_std": float(np.nanstd(M[~np.eye(len(names), dtype=bool)])),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(f"eps={eps:<5} same-arch {same:.3f}  cross-arch {cross:.3f}  diff {same - cross:+.3f}  "
              f"min self-success {row['min_self_success']:.3f}  off-diag std {row['offdiag_sat_std']:.3f}  {row['seconds']:.0f}s", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "eps_sweep.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
