"""Bad output matrix: an output that is an input, two options naming one file, a device or FIFO.
Each case must give ONE line naming the problem, exit 2, no traceback, and leave every
file named on the command line (inputs above all) exactly as it was."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from satkit.cli.app import app
from tests.cli_helpers import SENTINEL, run_bad_case
from tests.test_bad_inputs import ws  # noqa: F401

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wso(ws):  # noqa: F811
    """The bad-input workspace plus a SAT matrix, links and special files."""
    from satkit.matrix.square import write_similarity_matrix

    d = ws
    if not (d / "sat.csv").exists():
        names = ["a", "b", "c", "d"]
        S = np.array([[4.6, 3.0, 1.0, 1.2], [3.1, 4.6, 1.1, 1.0], [1.0, 1.2, 4.6, 3.3], [1.1, 1.0, 3.2, 4.6]])
        write_similarity_matrix(d / "sat.csv", names, S)
        os.link(d / "t.csv", d / "t_hardlink.csv")
        (d / "t_symlink.csv").symlink_to(d / "t.csv")
        os.mkfifo(d / "fifo.csv")
        (d / "zero.csv").symlink_to("/dev/zero")  # a device that is not the null device: only ever stat()ed
    if not (d / "t_formula.csv").exists():  # a hand-edited transfer table naming its model `=1+1`
        (d / "t_formula.csv").write_text((d / "t.csv").read_text().replace("good", "=1+1"))
    if not (d / "study").exists():  # a study `approx --study` reads (its files only checked, never read, here)
        from tests.test_trust_paths import make_fake_study

        make_fake_study(d / "study")
        (d / "labels.csv").write_text("img.png,0\n")
    return d


# (id, args (with {d} for the workspace), words the message must contain) -- the shape of test_bad_inputs.CASES
CASES = [
    ("matrix-output-is-input", ["matrix", "{d}/t.csv", "-o", "{d}/t.csv"], ["-o", "is also an input", "never writes over its inputs"]),
    ("matrix-output-is-hardlink-of-input", ["matrix", "{d}/t.csv", "-o", "{d}/t_hardlink.csv"], ["is also an input"]),
    ("matrix-output-is-symlink-to-input", ["matrix", "{d}/t.csv", "-o", "{d}/t_symlink.csv"], ["is also an input"]),
    ("matrix-long-is-input", ["matrix", "{d}/t.csv", "-o", "{out}.csv", "--long", "{d}/t.csv"], ["--long", "is also an input"]),
    ("matrix-output-and-long-same-file", ["matrix", "{d}/t.csv", "-o", "{out}.csv", "--long", "{out}.csv"],
     ["-o and --long name the same file", "its own path"]),
    ("matrix-output-fifo", ["matrix", "{d}/t.csv", "-o", "{d}/fifo.csv"], ["fifo.csv is a device/FIFO", "- for stdout"]),
    ("matrix-output-symlink-to-dev-zero", ["matrix", "{d}/t.csv", "-o", "{d}/zero.csv"], ["device/FIFO"]),
    ("matrix-formula-name-in-table", ["matrix", "{d}/t_formula.csv", "-o", "{out}.csv"], ["not writing", "'=1+1'", "spreadsheets run as a formula"]),
    ("cluster-output-is-input", ["cluster", "{d}/sat.csv", "-o", "{d}/sat.csv"], ["-o", "is also an input"]),
    ("cluster-keywords-is-input", ["cluster", "{d}/sat.csv", "-o", "{out}.csv", "--keywords", "{d}/sat.csv"], ["--keywords", "is also an input"]),
    ("cluster-output-and-keywords-same-file", ["cluster", "{d}/sat.csv", "-o", "{out}.csv", "--keywords", "{out}.csv"],
     ["-o and --keywords name the same file"]),
    ("cluster-plot-fifo", ["cluster", "{d}/sat.csv", "-o", "{out}.csv", "--plot", "{d}/fifo.csv"], ["device/FIFO"]),
    ("importance-output-is-input", ["importance", "{d}/sat.csv", "-o", "{d}/sat.csv"], ["is also an input"]),
    ("ensemble-summary-is-input", ["ensemble", "{d}/l1.safetensors", "{d}/l2.safetensors", "--summary", "{d}/l1.safetensors"],
     ["--summary", "is also an input"]),
    ("ensemble-grid-is-sat", ["ensemble", "{d}/l1.safetensors", "{d}/l2.safetensors", "--sat", "{d}/sat.csv", "-k", "2", "--grid", "{d}/sat.csv"],
     ["--grid", "is also an input"]),
    ("merge-output-is-shard", ["merge", "{d}/adv.safetensors", "-o", "{d}/adv.safetensors"], ["is also an input"]),
    ("cards-export-dev-zero", ["cards", "export", "-o", "{d}/zero.csv"], ["device/FIFO"]),
    ("distill-output-is-teacher",
     ["distill", "--teacher", "{d}/weights_misfit.safetensors", "--arch", "digits/resnet", "--student", "digits/vit", "-o", "{d}/weights_misfit.safetensors"],
     ["-o", "is also an input"]),
    ("distill-metrics-not-a-metrics-table", ["distill", "--student", "digits/vit", "-o", "{out}.safetensors", "--metrics", "{d}/t.csv"],
     ["t.csv", "not a satkit distill metrics table"]),
    ("distill-metrics-is-output", ["distill", "--student", "digits/vit", "-o", "{out}.safetensors", "--metrics", "{out}.safetensors"],
     ["-o and --metrics name the same file"]),
    ("distill-metrics-fifo", ["distill", "--student", "digits/vit", "-o", "{out}.safetensors", "--metrics", "{d}/fifo.csv"], ["device/FIFO"]),
    ("distill-metrics-dir-missing", ["distill", "--student", "digits/vit", "-o", "{out}.safetensors", "--metrics", "{d}/no/such/m.csv"], ["does not exist"]),
    ("transfer-output-is-attack-file", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "-o", "{d}/adv.safetensors"], ["is also an input"]),
    ("transfer-per-sample-is-output", ["transfer", "{d}/good.pt2", "{d}/adv.safetensors", "-o", "{out}.csv", "--per-sample", "{out}.csv"],
     ["name the same file"]),
    ("attack-output-is-model-file", ["attack", "{d}/good.pt2", "--n", "30", "--steps", "1", "-o", "{d}/good.pt2"], ["is also an input"]),
    ("attack-output-is-data-file", ["attack", "{d}/good.pt2", "--data", "{d}/adv.safetensors", "--steps", "1", "-o", "{d}/adv.safetensors"],
     ["is also an input"]),
    ("attack-output-fifo", ["attack", "{d}/good.pt2", "--n", "30", "--steps", "1", "-o", "{d}/fifo.csv"], ["device/FIFO"]),
    ("logits-output-is-model-file", ["logits", "{d}/good.pt2", "--n", "30", "-o", "{d}/good.pt2"], ["is also an input"]),
    ("approx-output-is-sat", ["approx", "{d}/good.pt2", "--models", "{d}/five.pt2", "--sat", "{d}/sat.csv", "--n", "30", "--steps", "1", "-o", "{d}/sat.csv"],
     ["is also an input"]),
    ("distill-recommend-output-is-sat", ["distill", "--recommend", "--student", "a", "--sat", "{d}/sat.csv", "--recommend-output", "{d}/sat.csv"],
     ["--recommend-output", "is also an input"]),
    # every file a command reads, not only those on its command line: the study's files, a --data folder, a labels file
    ("approx-output-is-study-json", ["approx", "digits/mixer-s1", "--study", "{d}/study", "-o", "{d}/study/study.json"], ["--output", "is also an input"]),
    ("approx-output-is-study-sat", ["approx", "digits/mixer-s1", "--study", "{d}/study", "-o", "{d}/study/sat.csv"], ["is also an input"]),
    ("approx-output-in-study-transfer", ["approx", "digits/mixer-s1", "--study", "{d}/study", "-o", "{d}/study/transfer/digits__resnet-s1.csv"],
     ["lies in", "is also an input"]),
    ("approx-save-attack-over-study-attack",
     ["approx", "digits/mixer-s1", "--study", "{d}/study", "--save-attack", "{d}/study/attacks/digits__vit-s1.safetensors"],
     ["--save-attack", "is also an input"]),
    ("attack-output-is-image-of-data-folder",
     ["attack", "digits/resnet-s1", "--data", "{d}/folder_broken", "--steps", "1", "-o", "{d}/folder_broken/cat/bad.jpg"],
     ["lies in", "is also an input"]),
    ("logits-output-inside-data-folder", ["logits", "digits/resnet-s1", "--data", "{d}/folder_broken", "-o", "{d}/folder_broken/logits.safetensors"],
     ["lies in", "is also an input"]),
    ("attack-output-is-labels-file",
     ["attack", "digits/resnet-s1", "--data", "{d}/folder_flat", "--labels", "{d}/labels.csv", "--steps", "1", "-o", "{d}/labels.csv"],
     ["is also an input"]),
]


def _snapshot(paths):
    """What each existing path on the command line is: its type, link target and bytes."""
    snap = {}
    for p in paths:
        if not os.path.lexists(p):
            continue
        st = os.lstat(p)
        link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
        target = os.stat(p) if link else st
        content = Path(p).read_bytes() if stat.S_ISREG(target.st_mode) else None
        snap[p] = (stat.S_IFMT(st.st_mode), link, stat.S_IFMT(target.st_mode), content)
    return snap


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_output(wso, tmp_path, case):
    argv = [a.format(d=wso, out=tmp_path / "out") for a in case[1]]
    for p in argv:  # outputs exist beforehand with known bytes (run_bad_case checks them too)
        if p.startswith(str(tmp_path / "out")):
            Path(p).write_bytes(SENTINEL)
    before = _snapshot(argv)
    t0 = time.monotonic()
    run_bad_case(case, wso, tmp_path)
    elapsed = time.monotonic() - t0
    assert _snapshot(argv) == before, f"{case[0]}: a file on the command line changed"
    assert not [p for p in wso.iterdir() if p.name.endswith(".partial")]
    assert elapsed < 5, f"{case[0]}: took {elapsed:.1f} s; checks must come before any work"


def test_case_count():
    assert len(CASES) >= 15


def test_distill_checks_metrics_before_training(wso, tmp_path):
    """A bad --metrics fails in seconds, before training, and writes no student."""
    out = tmp_path / "student.safetensors"
    t0 = time.monotonic()
    r = runner.invoke(app, ["distill", "--student", "digits/vit", "--epochs", "1", "-o", str(out), "--metrics", str(wso / "t.csv")])
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    assert "not a satkit distill metrics table" in r.stderr
    assert time.monotonic() - t0 < 5
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_info_reads_stdin(wso):
    data = (wso / "adv.safetensors").read_bytes()
    r = runner.invoke(app, ["info", "-"], input=data)
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert "satkit.attack" in r.stdout and "tensor clean" in r.stdout
    r = runner.invoke(app, ["info", "-"], input=b"")
    assert r.exit_code == 2 and r.stderr.strip() == "satkit: error: stdin: empty input, expected a satkit attack or logits or data file"


# ----------------------------------------------------------------------------- broken pipe


def test_closed_stdout_exits_141_silently():
    """The reader is gone before satkit writes: no traceback, no 'Exception ignored', exit 141."""
    p = subprocess.Popen([sys.executable, "-m", "satkit", "cards", "export"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141
    assert err == b""


def test_pipe_into_head_is_quiet():
    r = subprocess.run(f"{sys.executable} -m satkit cards export | head -1", shell=True, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Model name,")
    assert r.stderr == ""


def test_zoo_train_checks_the_weights_path_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("SATKIT_HOME", str(tmp_path))
    (tmp_path / "zoo").mkdir()
    os.mkfifo(tmp_path / "zoo" / "resnet-s1.safetensors")
    t0 = time.monotonic()
    r = runner.invoke(app, ["zoo", "train", "resnet-s1"])
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    assert r.stderr.startswith("satkit: error:") and "device/FIFO" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 5
    assert stat.S_ISFIFO(os.lstat(tmp_path / "zoo" / "resnet-s1.safetensors").st_mode)
