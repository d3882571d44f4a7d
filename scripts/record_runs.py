"""Re-make the recorded runs under docs/runs/ from real runs, and say which numbers changed.

    python scripts/record_runs.py [RUN ...] [--work DIR] [--keep]

The benchmark tier of the docs' numbers (the fast tier, tests/test_docs_numbers.py,
only renders the docs from these records: python scripts/docs_numbers.py --check).
Each run below is a list of commands; they run in WORK (default: a temporary
directory), the small output files a doc quotes are copied to docs/runs/<run>/,
and docs/runs/<run>/run.json records the exact commands, the satkit, torch and
Python versions, the date and the wall time. No attack tensors are kept, only
tables (CSV/JSON of a few kB).

Runs (in dependency order; a later run reads the records of an earlier one):

- study-default     satkit study (the digits zoo, every default): sat.csv,
                    same_class.csv, models.csv, clusters.csv, importance.csv,
                    ensemble summary -> docs/study.md
- cluster-methods   satkit cluster on study-default's sat.csv, k 2..6, paper and
                    njw -> docs/analysis.md
- ensembles         satkit logits of each zoo model, then satkit ensemble with
                    the default clustering (k = 2, paper) and k = 6, --select
                    3/4/5 -> docs/applications.md
- approx-loo        satkit approx MODEL --study (each zoo model left out), at the
                    eigengap k and k = 4 -> docs/applications.md
- strategies        satkit study --zoo strategies, scripts/strategy_tables.py
                    --json -> docs/study.md (Table-2 analogue)
- apgd-check        benchmarks/apgd_check.py at eps 0.1 (n 500) and 0.03 (n 200,
                    the same random start): satkit's apgd-ce against
                    torchattacks' APGD -> docs/attacks.md (needs torchattacks)
- paper-release     the SAT paper's released matrix (github.com/J-H-Hwang/SAT,
                    SAT_release.csv; pass --release PATH): the pairs and means
                    docs/study.md sets beside the digits numbers

Runs recorded once, too costly to re-make routinely (their run.json names the
command; re-make them by hand and replace the record): attacks
(scripts/attack_tables.py, 5-6 studies), eps-sweep (benchmarks/eps_sweep.py),
distill (12 trainings of satkit distill).

After re-recording: python scripts/docs_numbers.py --write, then re-read the
prose next to every table that changed (git diff docs/).
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "runs"
ZOO = ["convmixer-s1", "convnext-s1", "mixer-s1", "mobilenet-s1", "resnet-s1", "resnet-s2", "resnet-s3",
       "vit-s1", "vit-s2", "vit-s3"]


def versions() -> dict:
    import torch

    import satkit

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False).stdout.strip()

    return {"satkit": satkit.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "git": git("rev-parse", "--short", "HEAD"),
            # uncommitted edits in satkit/ at the time of the run: the commit alone does not say what ran
            "git_dirty": bool(git("status", "--porcelain", "--", "satkit"))}


# a later run works on study-default's study directory when it is at hand (--work), else runs the study again
STUDY = "test -d ../study-default/study && ln -sfn ../study-default/study study || satkit study -o study -q"


def recipe(run: str, work: Path, release: Path | None) -> tuple[list[str], dict[str, str]]:
    """The shell commands of ``run`` (run in ``work``) and the files to keep: {record name: path in work}."""
    rec = RUNS / "study-default"
    if run == "study-default":
        cmds = ["satkit study -o study -q",
                "satkit importance study/sat.csv -o /dev/null 2> importance.txt"]
        keep = {f: f"study/{f}" for f in ("sat.csv", "same_class.csv", "models.csv", "clusters.csv", "keywords.csv",
                                          "importance.csv", "ensemble.json", "ensemble_grid.csv", "study.json")}
        keep["importance.txt"] = "importance.txt"
        return cmds, keep
    if run == "cluster-methods":
        cmds, keep = [], {}
        for method in ("paper", "njw"):
            for k in range(2, 7):
                f = f"{method}_k{k}.csv"
                cmds.append(f"satkit cluster {rec / 'sat.csv'} -k {k} --method {method} -q -o {f}")
                keep[f] = f
        cmds.append(f"satkit cluster {rec / 'sat.csv'} --method paper -q -o paper_eigengap.csv")
        keep["paper_eigengap.csv"] = "paper_eigengap.csv"
        return cmds, keep
    if run == "ensembles":
        # the study's clean logits (what `satkit logits digits/M` writes for the same sample)
        logits = " ".join(f"study/logits/digits__{m}.safetensors" for m in ZOO)
        cmds, keep = [STUDY], {}
        for k in (2, 6):
            cmds.append(f"satkit cluster {rec / 'sat.csv'} -k {k} -q -o clusters_k{k}.csv")
            cmds.append(f"satkit ensemble {logits} --sat {rec / 'sat.csv'} --clusters clusters_k{k}.csv --draws 1000 "
                        f"--seed 0 -q -o ensembles.csv --grid grid_k{k}.csv --summary summary_k{k}.json")
            keep |= {f"clusters_k{k}.csv": f"clusters_k{k}.csv", f"grid_k{k}.csv": f"grid_k{k}.csv",
                     f"summary_k{k}.json": f"summary_k{k}.json"}
        cmds.append("python -c \"import polars as pl; pl.read_csv('ensembles.csv').filter(pl.col('size') == 2)"
                    ".write_csv('pairs.csv')\"")
        keep["pairs.csv"] = "pairs.csv"
        for m in (3, 4, 5):
            cmds.append(f"satkit ensemble {logits} --sat {rec / 'sat.csv'} --select {m} -q -o /dev/null "
                        f"--summary select_{m}.json")
            keep[f"select_{m}.json"] = f"select_{m}.json"
        return cmds, keep
    if run == "approx-loo":
        cmds, keep = [STUDY], {}
        for m in ZOO:
            for tag, kopt in (("eigengap", ""), ("k4", " -k 4")):
                f = f"{m}_{tag}.json"
                cmds.append(f"satkit approx digits/{m} --study study{kopt} -q -o /dev/null --summary {f}")
                keep[f] = f
        return cmds, keep
    if run == "strategies":
        cmds = ["satkit study --zoo strategies -o study -q",
                f"python {ROOT / 'scripts' / 'strategy_tables.py'} study --json strategies.json"]
        return cmds, {"strategies.json": "strategies.json", "sat.csv": "study/sat.csv"}
    if run == "apgd-check":  # needs torchattacks: pip install --no-deps torchattacks
        cmds = [f"python {ROOT / 'benchmarks' / 'apgd_check.py'} --n 500 --eps 0.1 --steps 50 --json eps0.1.json",
                (f"python {ROOT / 'benchmarks' / 'apgd_check.py'} --n 200 --eps 0.03 --steps 50 --same-start "
                 "--json eps0.03_same.json")]
        return cmds, {f: f for f in ("eps0.1.json", "eps0.03_same.json")}
    if run == "paper-release":
        if release is None:
            sys.exit("paper-release: pass --release PATH/TO/SAT_release.csv (github.com/J-H-Hwang/SAT)")
        cmds = [f"python {ROOT / 'scripts' / 'record_runs.py'} --summarize-release {release} > release.json"]
        return cmds, {"release.json": "release.json"}
    sys.exit(f"unknown run {run!r}; runs: study-default cluster-methods ensembles approx-loo strategies apgd-check "
             "paper-release")


def summarize_release(path: Path) -> dict:
    """The numbers docs/study.md quotes from the paper's released SAT matrix (69 models)."""
    import hashlib

    import numpy as np
    import polars as pl

    df = pl.read_csv(path)
    names = [str(v) for v in df[df.columns[0]].to_list()]
    cols = df.columns[1:]
    if list(cols) != names:
        raise SystemExit(f"{path}: not a square matrix with matching row and column names")
    S = df.select(cols).to_numpy().astype(float)
    n = len(names)
    off = ~np.eye(n, dtype=bool)
    idx = {m: i for i, m in enumerate(names)}

    def pair(a: str, b: str) -> dict:
        i, j = idx[a], idx[b]
        return {"a": a, "b": b, "ab": float(S[i, j]), "ba": float(S[j, i]), "mean": float((S[i, j] + S[j, i]) / 2)}

    out = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "n_models": n,
           "mean_off_diagonal": float(S[off].mean()), "mean_all_cells": float(S.mean()), "min_off_diagonal": float(S[off].min()),
           "max_off_diagonal": float(S[off].max()), "mean_diagonal": float(np.diag(S).mean()),
           "symmetric": bool(np.allclose(S, S.T)), "pairs": {}}
    for a, b in (("resnet50", "vit_small_patch16_224"),):
        if a in idx and b in idx:
            out["pairs"][f"{a} x {b}"] = pair(a, b)
    return out


def diff_record(old: Path, new: Path) -> list[str]:
    if not old.is_file():
        return [f"  new file {old.name}"]
    a, b = old.read_text().splitlines(), new.read_text().splitlines()
    if a == b:
        return []
    return [f"  {old.name}:"] + ["    " + line for line in difflib.unified_diff(a, b, "recorded", "new", n=0, lineterm="")][2:]


def record(run: str, work: Path, release: Path | None) -> None:
    cmds, keep = recipe(run, work, release)
    t0 = time.perf_counter()
    for c in cmds:
        print(f"[{run}] $ {c}", file=sys.stderr)
        subprocess.run(c, shell=True, cwd=work, check=True)
    seconds = time.perf_counter() - t0
    dest = RUNS / run
    dest.mkdir(parents=True, exist_ok=True)
    changes: list[str] = []
    for name, src in keep.items():
        changes += diff_record(dest / name, work / src)
        shutil.copyfile(work / src, dest / name)
    rel = [c.replace(f"{ROOT}/", "") for c in cmds]
    meta = {"run": run, "commands": rel, "cwd": "a fresh work directory (WORK/<run>); repository paths relative to its root", "versions": versions(),
            "date": dt.date.today().isoformat(), "wall_seconds": round(seconds, 1),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared with other jobs)",
            "files": sorted(keep)}
    (dest / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{run}: {'unchanged' if not changes else 'changed:'}")
    for line in changes:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", default=["study-default", "cluster-methods", "ensembles", "approx-loo",
                                                 "strategies"])
    ap.add_argument("--work", type=Path, help="work directory (kept); default: a temporary one per run")
    ap.add_argument("--release", type=Path, help="SAT_release.csv of github.com/J-H-Hwang/SAT (run paper-release)")
    ap.add_argument("--summarize-release", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.summarize_release:
        print(json.dumps(summarize_release(a.summarize_release), indent=2))
        return
    for run in a.runs:
        if a.work:
            work = a.work / run
            work.mkdir(parents=True, exist_ok=True)
            record(run, work, a.release)
        else:
            with tempfile.TemporaryDirectory(prefix=f"satkit-{run}-") as d:
                record(run, Path(d), a.release)


if __name__ == "__main__":
    main()
