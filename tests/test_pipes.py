"""`-` means stdout/stdin for attack and logits files too: real shell pipelines, no file named `-`."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

SATKIT = f"{sys.executable} -m satkit"


def sh(cmd: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_attack_to_transfer_and_logits_to_info_through_pipes(tmp_path):
    r = sh(f"{SATKIT} attack digits/resnet-s1 --n 20 --steps 2 -o - | {SATKIT} transfer digits/resnet-s2 - -o t.csv", tmp_path)
    assert r.returncode == 0, r.stderr
    t = pl.read_csv(tmp_path / "t.csv")
    assert t.height == 1 and t["source"][0] == "digits/resnet-s1" and t["target"][0] == "digits/resnet-s2"
    assert 0 < t["n_both"][0] <= 20
    r = sh(f"{SATKIT} logits digits/vit-s1 --n 20 -o - | {SATKIT} info -", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "satkit.logits" in r.stdout and "digits/vit-s1" in r.stdout
    assert not (tmp_path / "-").exists()
    # the piped attack file equals the one written to disk
    r = sh(f"{SATKIT} attack digits/resnet-s1 --n 20 --steps 2 -o - > piped.safetensors && "
           f"{SATKIT} attack digits/resnet-s1 --n 20 --steps 2 -o file.safetensors", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "piped.safetensors").read_bytes() == (tmp_path / "file.safetensors").read_bytes()
