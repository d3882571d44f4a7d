"""Markdown tables for docs/attacks.md: SAT under each attack against SAT under PGD, on the digits zoo.

    python scripts/attack_tables.py ROOT [--attacks pgd mifgsm vmifgsm apgd-ce lf-pgd] [--steps ATTACK=N ...]

Runs (or resumes) one study per attack in ROOT/<attack> with the default
settings (digits test set, eps 0.1, 50 steps), then prints, per attack: the
mean self-attack success, the gradients per image, the attack stage's wall time
per image (only for studies run by this call: a resumed study has no time), and
the agreement of its SAT matrix with PGD's (`satkit compare`: Pearson, Spearman,
Mantel p, ARI of the clusterings at PGD's eigengap k). Then the PGD study's
same-class rates against its SAT (appendix G.2). Timing is for this machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from scipy import stats

    from satkit.analysis.compare import compare_matrices
    from satkit.attacks import AttackParams
    from satkit.matrix.square import read_similarity_matrix
    from satkit.study import StudyConfig, run_study

    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--attacks", nargs="+", default=["pgd", "mifgsm", "vmifgsm", "apgd-ce", "lf-pgd"])
    ap.add_argument("--steps", nargs="*", default=[], help="ATTACK=N overrides of the 50 steps")
    a = ap.parse_args()
    steps = {k: int(v) for k, v in (s.split("=") for s in a.steps)}
    timings_path = a.root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    rows = {}
    for name in a.attacks:
        params = AttackParams(eps=0.1, steps=steps.get(name, 50), attack=name)
        cfg = StudyConfig.create(None, a.root / name, params=params, analyses=False)
        t0 = time.perf_counter()
        res = run_study(cfg)
        if res.attacks_run == len(cfg.models):
            images = len(cfg.models) * _n_images(cfg)
            timings[name] = {"attack_seconds": res.seconds.get("attack", float("nan")), "images": images,
                             "study_seconds": time.perf_counter() - t0}
            a.root.mkdir(parents=True, exist_ok=True)
            timings_path.write_text(json.dumps(timings, indent=2))
        success = [s["attack_success_rate"] for s in res.attack_stats.values()]
        rows[name] = (params, float(np.mean(success)), float(np.min(success)))
    names_p, P = read_similarity_matrix(a.root / "pgd" / "sat.csv")
    print("| attack | steps | gradients / image | mean self-attack success (min) | attack s / image | Pearson r vs PGD "
          "| Spearman rho | Mantel p | ARI (k) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (params, mean_s, min_s) in rows.items():
        t = timings.get(name)
        per_image = f"{t['attack_seconds'] / t['images'] * 1e3:.1f} ms" if t else "n/a"
        if name == "pgd":
            cmp_cells = "1 | 1 | - | 1"
        else:
            names_x, X = read_similarity_matrix(a.root / name / "sat.csv")
            c = compare_matrices(names_p, P, names_x, X)
            cmp_cells = f"{c.pearson:.3f} | {c.spearman:.3f} | {c.mantel_p:.4f} | {c.ari:.2f} ({c.k})"
        print(f"| {name} | {params.steps} | {params.gradients_per_sample} | {mean_s:.3f} ({min_s:.3f}) | {per_image} | {cmp_cells} |")
    names_s, C = read_similarity_matrix(a.root / "pgd" / "same_class.csv")
    assert names_s == names_p
    iu = np.triu_indices(len(names_p), 1)
    s, c = P[iu], C[iu]
    pr, sr = stats.pearsonr(s, c), stats.spearmanr(s, c)
    print()
    print(f"Same-class rate vs SAT over the {len(s)} cross pairs (PGD study): Pearson r = {pr.statistic:.3f} "
          f"(p = {pr.pvalue:.2g}), Spearman rho = {sr.statistic:.3f} (p = {sr.pvalue:.2g}); "
          f"same-class rate from {c.min():.3f} to {c.max():.3f}, mean {c.mean():.3f}.")


def _n_images(cfg) -> int:
    from satkit.study.tasks import study_data

    return len(study_data(cfg))


if __name__ == "__main__":
    main()
