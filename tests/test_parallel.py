"""Studies run elsewhere give the same files: one worker process per device, Ray tasks, sharded shells.

CPU stands in for GPUs here (``--devices cpu,cpu``); a local Ray instance stands
in for a cluster.
"""

import importlib.util

import numpy as np
import polars as pl
import pytest
from safetensors.torch import load_file

from satkit.attacks import AttackParams
from satkit.errors import ParameterError, SatkitError
from satkit.study import StudyConfig, run_study
from satkit.study.executors import DeviceExecutor, parse_devices
from tests.cli_helpers import assert_clean_error, run

pytestmark = pytest.mark.slow  # worker processes and a local Ray instance

MODELS = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1"]
P = AttackParams(eps=0.1, steps=2)


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    res = run_study(StudyConfig.create(MODELS, out, params=P, n=40, analyses=False, ci=0.9))
    return out, res


def _same_outputs(a, b):
    assert (a / "sat.csv").read_bytes() == (b / "sat.csv").read_bytes()
    for f in sorted((a / "attacks").glob("*.safetensors")):
        x, y = load_file(f), load_file(b / "attacks" / f.name)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k].numpy(), y[k].numpy()), (f.name, k)
    for f in sorted((a / "transfer").glob("*.csv")):
        assert pl.read_csv(f).equals(pl.read_csv(b / "transfer" / f.name)), f.name


def test_devices_executor_gives_the_local_result(local_study, tmp_path):
    out, local = local_study
    res = run_study(StudyConfig.create(MODELS, tmp_path, params=P, n=40, analyses=False, ci=0.9), executor=DeviceExecutor(["cpu", "cpu"]))
    assert res.attacks_run == 3 and res.transfer_evaluations == 9 and res.model_loads == 6
    np.testing.assert_array_equal(res.matrix.values, local.matrix.values)
    _same_outputs(out, tmp_path)
    assert (tmp_path / "sat_long.csv").read_bytes() == (out / "sat_long.csv").read_bytes()  # intervals included


# Ray is the [ray] extra (CI installs .[test,ray]); without it the test skips before building the local study.
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')")
def test_ray_local_gives_the_local_result(local_study, tmp_path):
    out, local = local_study
    r = run("study", *MODELS, "--n", 40, "--steps", 2, "--eps", 0.1, "--no-analyses", "--ci", 0.9,
            "--ray", "local", "-o", tmp_path)
    assert "3 attack(s) run" in r.stderr and "9 transfer evaluation(s) run" in r.stderr and "on Ray" in r.stderr
    _same_outputs(out, tmp_path)
    # resuming under Ray reuses everything
    r2 = run("study", *MODELS, "--n", 40, "--steps", 2, "--eps", 0.1, "--no-analyses", "--ray", "local", "-o", tmp_path)
    assert "0 attack(s) run, 3 reused" in r2.stderr and "0 transfer evaluation(s) run" in r2.stderr


def test_ci_columns_bracket_the_estimate(local_study):
    out, _ = local_study
    long = pl.read_csv(out / "sat_long.csv")
    assert {"sat_ci_low", "sat_ci_high"} <= set(long.columns)
    ok = long.drop_nulls(["sat", "sat_ci_low", "sat_ci_high"])
    assert ok.height == long.height == 6  # 3 models: 6 pairs, every interval defined
    assert (ok["sat_ci_low"] <= ok["sat"] + 1e-9).all() and (ok["sat"] <= ok["sat_ci_high"] + 1e-9).all()
    assert (ok["sat_ci_high"] > ok["sat_ci_low"]).any()
    # per-sample outcomes kept per target: every (source, sample) once
    ps = pl.read_parquet(out / "transfer" / "digits__vit-s1.samples.parquet")
    assert ps.height == 3 * 40 and ps.select(["source", "id"]).is_unique().all()
    t = pl.read_csv(out / "transfer" / "digits__vit-s1.csv")
    fooled = ps.group_by("source").agg(pl.col("fooled").sum()).sort("source")
    assert fooled["fooled"].to_list() == t.sort("source")["n_fooled"].to_list()


def test_matrix_ci_from_study_files(local_study, tmp_path):
    out, _ = local_study
    long = tmp_path / "long.csv"
    per_sample = [a for f in sorted((out / "transfer").glob("*.parquet")) for a in ("--per-sample", f)]
    run("matrix", *sorted((out / "transfer").glob("*.csv")), *per_sample, "--ci", 0.9, "--long", long, "-o", tmp_path / "m.csv", "-q")
    assert pl.read_csv(long).equals(pl.read_csv(out / "sat_long.csv"))


def test_incremental_study_extends_per_sample_outcomes(tmp_path):
    run_study(StudyConfig.create(MODELS[:2], tmp_path, params=P, n=30, analyses=False))
    more = run_study(StudyConfig.create(MODELS, tmp_path, params=P, n=30, analyses=False, ci=0.9))
    assert more.attacks_run == 1 and more.transfer_evaluations == 2 * 2 + 1
    for m in MODELS:
        ps = pl.read_parquet(tmp_path / "transfer" / f"{m.replace('/', '__')}.samples.parquet")
        assert sorted(ps["source"].unique().to_list()) == sorted(MODELS) and ps.height == 3 * 30


def test_worker_errors_reach_the_user_as_one_line(tmp_path):
    r = run("study", "digits/resnet-s1", "digits/no-such-model", "--n", 20, "--steps", 1, "--no-analyses",
            "--devices", "cpu,cpu", "-o", tmp_path / "s", ok=False)
    assert_clean_error(r, "no-such-model")


def test_parse_devices():
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    for bad, words in [("", "comma-separated"), ("auto", "explicit"), ("cuda:7", "CUDA"), ("tpu", "unknown device")]:
        with pytest.raises(SatkitError, match=words):
            parse_devices(bad)
    with pytest.raises(ParameterError):
        DeviceExecutor([])


@pytest.mark.parametrize("args,words", [
    (["--devices", "cpu", "--ray", "local"], ["cannot be combined"]),
    (["--devices", "gpu0"], ["unknown device"]),
    (["--ci", "1.5"], ["--ci"]),
    (["--ci", "0.9", "--no-per-sample"], ["per-sample"]),
    (["--batch-size", "many"], ["--batch-size"]),
    (["--shard", "2/2"], ["--shard"]),
])
def test_study_option_errors(tmp_path, args, words):
    r = run("study", "digits/resnet-s1", "digits/vit-s1", *args, "-o", tmp_path / "s", ok=False)
    assert_clean_error(r, *words)
    assert not (tmp_path / "s" / "sat.csv").exists()
