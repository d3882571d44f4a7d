"""The Table-2 analogue for docs/study.md: SAT by how two models differ.

    python scripts/strategy_tables.py STUDY_DIR [--json OUT.json]

``--json`` writes the rows as a record (scripts/record_runs.py strategies ->
docs/runs/strategies/), from which scripts/docs_numbers.py renders the table.

STUDY_DIR is a finished `satkit study --zoo strategies` (per-sample outcomes kept,
the default). Groups of pairs, per architecture (resnet, vit) and pooled:

- other seed: <arch>-s1, -s2, -s3 among themselves;
- other hyper-parameters: <arch>-s1 with <arch>-lr and <arch>-wd;
- other training regime: <arch>-s1 with <arch>-noaug, -nols, -kd, -long;
- other architecture: every resnet-* with every vit-*.

Each group's mean SAT gets a 95 % percentile-bootstrap interval: the clean samples
are resampled with replacement (the same draws for every pair, 1000 resamples)
and every pair's SAT is recomputed from the resampled counts, then averaged.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl

from satkit.matrix.square import read_similarity_matrix
from satkit.study import read_settings

HYPER = ("lr", "wd")
REGIME = ("noaug", "nols", "kd", "long")
# the paper's Table 2 (ResNet-50, ViT-S); "All" (2.73) is the mean over all 69 models, not a resnet x vit pair
PAPER = {"resnet: other seed": "4.23", "vit: other seed": "4.21", "resnet: other hyper-parameters": "4.05",
         "vit: other hyper-parameters": "4.22", "resnet: other training regime": "3.27",
         "vit: other training regime": "3.44"}


def groups(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    short = {n.removeprefix("digits/"): n for n in names}
    out: dict[str, list[tuple[str, str]]] = {}
    for arch in ("resnet", "vit"):
        base = f"{arch}-s1"
        seeds = list(combinations([f"{arch}-s{s}" for s in (1, 2, 3)], 2))
        hyper = [(base, f"{arch}-{v}") for v in HYPER]
        regime = [(base, f"{arch}-{v}") for v in REGIME]
        out.setdefault("other seed", []).extend(seeds)
        out.setdefault("other hyper-parameters", []).extend(hyper)
        out.setdefault("other training regime", []).extend(regime)
        out[f"{arch}: other seed"] = seeds
        out[f"{arch}: other hyper-parameters"] = hyper
        out[f"{arch}: other training regime"] = regime
        for v in (*HYPER, *REGIME):
            out.setdefault(f"{arch}: {v}", []).append((base, f"{arch}-{v}"))
    res = [m for m in short if m.startswith("resnet-")]
    vit = [m for m in short if m.startswith("vit-")]
    out["other architecture"] = [(a, b) for a in res for b in vit]
    return {g: [(short[a], short[b]) for a, b in pairs] for g, pairs in out.items()}


def pair_arrays(samples: pl.DataFrame, a: str, b: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per clean sample (in ``ids`` order): in X_AB, and fooled count over both directions (0, 1 or 2)."""
    pos = {int(i): k for k, i in enumerate(ids)}
    both = np.zeros(len(ids), bool)
    fooled = np.zeros(len(ids), np.int64)
    for s, t in ((a, b), (b, a)):
        rows = samples.filter((pl.col("source") == s) & (pl.col("target") == t))
        k = np.array([pos[int(i)] for i in rows["id"].to_numpy()])
        both[k] = rows["source_correct"].to_numpy() & rows["target_correct"].to_numpy()
        fooled[k] += rows["fooled"].to_numpy().astype(np.int64)
    return both, fooled


def main(study: Path, n_boot: int = 1000, seed: int = 0, json_out: Path | None = None) -> None:
    st = read_settings(study)
    names, S = read_similarity_matrix(study / "sat.csv")
    idx = {n: i for i, n in enumerate(names)}
    samples = pl.concat([pl.read_parquet(p) for p in sorted((study / "transfer").glob("*.samples.parquet"))],
                        how="diagonal_relaxed")
    ids = np.unique(samples["id"].to_numpy())
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=n_boot).T  # (n, n_boot)
    cache: dict[tuple[str, str], np.ndarray] = {}

    def boot(a: str, b: str) -> np.ndarray:
        if (a, b) not in cache:
            both, fooled = pair_arrays(samples, a, b, ids)
            nb = both.astype(np.int64) @ weights
            nf = (fooled * both) @ weights
            with np.errstate(divide="ignore", invalid="ignore"):
                cache[(a, b)] = np.log(np.maximum(st.eps_s, 100.0 * nf / (2.0 * nb)))
        return cache[(a, b)]

    print("| pairs differ in | pairs | mean SAT [95 % CI] | paper (ImageNet, Table 2) |")
    print("|---|---|---|---|")
    rows = []
    for g, pairs in groups(names).items():
        mean = float(np.mean([S[idx[a], idx[b]] for a, b in pairs]))
        dist = np.mean([boot(a, b) for a, b in pairs], axis=0)
        lo, hi = np.nanpercentile(dist, [2.5, 97.5])
        rows.append({"group": g, "pairs": [[a, b] for a, b in pairs], "mean": mean, "ci": [float(lo), float(hi)]})
        print(f"| {g} | {len(pairs)} | {mean:.2f} [{lo:.2f}, {hi:.2f}] | {PAPER.get(g, '')} |")
    print()
    print(f"{len(ids)} clean images, eps {st.params.eps:g} ({st.params.attack}, {st.params.steps} steps), "
          f"{n_boot} bootstrap resamples of the images.")
    if json_out is not None:
        json_out.write_text(json.dumps({"n_images": len(ids), "eps": st.params.eps, "attack": st.params.attack,
                                        "steps": st.params.steps, "storage": st.params.storage, "n_boot": n_boot,
                                        "seed": seed, "groups": rows}, indent=2) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="the Table-2 analogue of a finished strategies study")
    ap.add_argument("study", type=Path)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON (the docs' record)")
    a = ap.parse_args()
    main(a.study, json_out=a.json)
