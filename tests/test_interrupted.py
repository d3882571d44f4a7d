"""Kill `satkit study` (SIGKILL) at several points, rerun: same matrix, never a partial file under a final name."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TinyCNN, save_program

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="SIGKILL"), pytest.mark.slow]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill_models")
    paths = []
    for seed in (1, 2, 3):
        p = save_program(TinyCNN(seed=seed), d / f"k{seed}.pt2")
        paths.append(str(p))
    return paths


def study_cmd(models, out, quiet=True):
    q = ["--quiet"] if quiet else []
    return [sys.executable, "-m", "satkit", *q, "study", *models, "--n", "120", "--steps", "20", "--eps", "0.1", "-o", str(out)]


def final_files(out: Path):
    return [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".partial")]


def assert_no_partial_under_final_names(out: Path):
    import polars as pl

    from satkit.formats import read_satkit_file

    for p in final_files(out):
        if p.suffix == ".safetensors" and p.parent.name == "attacks":
            f = read_satkit_file(p, "satkit.attack")  # parses: complete
            assert f.get("adv").shape[0] == 120
        elif p.suffix == ".safetensors":
            assert read_satkit_file(p, "satkit.logits").get("logits").shape[0] == 120
        elif p.suffix == ".csv":
            pl.read_csv(p)  # parses: complete


def run_and_kill(cmd, out: Path, when):
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if when(out):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(model_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(study_cmd(model_files, out), check=True)
    return (out / "sat.csv").read_text()


KILL_POINTS = {
    "during-first-attack": lambda out: (out / "attacks").exists(),  # made at the start; study.json comes last
    "after-first-attack": lambda out: len(list((out / "attacks").glob("*.safetensors"))) >= 1 if (out / "attacks").exists() else False,
    "after-first-transfer": lambda out: len(list((out / "transfer").glob("*.csv"))) >= 1 if (out / "transfer").exists() else False,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_and_resume(model_files, reference, tmp_path, point):
    out = tmp_path / "study"
    run_and_kill(study_cmd(model_files, out), out, KILL_POINTS[point])
    assert not (out / "sat.csv").exists()
    assert_no_partial_under_final_names(out)
    done_before = {p.name for p in (out / "attacks").glob("*.safetensors")} if (out / "attacks").exists() else set()
    r = subprocess.run(study_cmd(model_files, out, quiet=False), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "sat.csv").read_text() == reference
    assert not list(out.rglob("*.partial"))  # stale temporaries are cleaned up
    # attack files finished before the kill were reused, not recomputed
    if done_before:
        assert f"{len(done_before)} reused" in r.stderr
