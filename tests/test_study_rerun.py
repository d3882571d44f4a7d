"""Rerunning a finished study rewrites every output with the same bytes: the report,
plots, study.json and models.csv included (issue 20, section 5)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from satkit.io.cells import formula_like
from tests.cli_helpers import run

pytestmark = pytest.mark.slow  # two small studies end to end (~20 s on 2 cores)

MODELS = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1"]
# Files that may differ between runs, with the reason. The lock is not an output: it
# holds the pid, host and start time of the run holding it.
MAY_DIFFER = {".satkit.lock"}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rerun_of_a_finished_study_is_byte_identical(tmp_path):
    out = tmp_path / "study"
    # --ci adds the bootstrap intervals (sat_long.csv, the report's intervals section) to what is compared
    args = ["study", "-q", *MODELS, "--n", "60", "--steps", "5", "--ci", "0.95", "-o", out]
    run(*args)
    first = _snapshot(out)
    assert {"report.html", "study.json", "models.csv", "sat.csv", "sat.png", "sat.svg", "clusters.png"} <= set(first)
    run(*args)
    second = _snapshot(out)
    assert set(second) == set(first), "a rerun created or removed files"
    changed = sorted(n for n in first if n not in MAY_DIFFER and first[n] != second[n])
    assert not changed, f"a rerun changed {changed}"
    # the report written by `satkit report` into the study is the study's own, byte for byte
    run("report", "-q", out)
    assert (out / "report.html").read_bytes() == first["report.html"]
    # and no CSV cell a spreadsheet would run as a formula
    for name in (n for n in second if n.endswith(".csv")):
        with open(out / name, newline="", encoding="utf-8") as fh:
            bad = [c for row in csv.reader(fh) for c in row if formula_like(c)]
        assert not bad, (name, bad)
