"""Markdown tables of a finished study, for docs (python scripts/study_tables.py STUDY_DIR).

Prints the SAT matrix (models sorted, 2 decimals), same- vs cross-architecture
means (an architecture is the zoo name without its -sN seed), and the stored
eps budget, so docs/study.md is regenerated from a run instead of typed.
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from satkit.io.pixels import eps_steps_uint8
from satkit.matrix.square import read_similarity_matrix
from satkit.study import read_settings


def arch(name: str) -> str:
    return name.removeprefix("digits/").rsplit("-s", 1)[0]


def tables(study: Path) -> str:
    """The markdown (scripts/docs_numbers.py renders docs/study.md's matrix with this, from docs/runs/study-default)."""
    st = read_settings(study)
    names, S = read_similarity_matrix(study / "sat.csv")
    order = sorted(range(len(names)), key=lambda i: names[i])
    short = [names[i].removeprefix("digits/") for i in order]
    out = ["| | " + " | ".join(short) + " |", "|---|" + "---|" * len(short)]
    for a, i in zip(short, order):
        out.append(f"| {a} | " + " | ".join(f"{S[i, j]:.2f}" for j in order) + " |")
    same = [S[i, j] for i, j in combinations(range(len(names)), 2) if arch(names[i]) == arch(names[j])]
    cross = [S[i, j] for i, j in combinations(range(len(names)), 2) if arch(names[i]) != arch(names[j])]
    out.append("")
    out.append(f"Mean SAT of the {len(same)} same-architecture pairs: {np.mean(same):.3f}; "
               f"of the {len(cross)} cross-architecture pairs: {np.mean(cross):.3f}.")
    eps = st.params.eps
    if st.params.storage == "uint8":
        k = eps_steps_uint8(eps)
        out.append(f"Budget: eps {eps:g} requested; stored as uint8, so at most {k} 8-bit steps = {k}/255 = {k / 255:.4f}.")
    else:
        out.append(f"Budget: eps {eps:g}, stored as {st.params.storage} (the bound holds exactly on the stored values).")
    return "\n".join(out) + "\n"


def main(study: Path) -> None:
    print(tables(study), end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/study_tables.py STUDY_DIR")
    main(Path(sys.argv[1]))
