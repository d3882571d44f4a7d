"""Every subcommand through typer's CliRunner, as a user runs it."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from satkit.cli.app import app
from tests.cli_helpers import assert_clean_error, run, runner  # noqa: F401
from tests.conftest import TinyCNN, save_program


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("m1", 1), ("m2", 2), ("m3", 3)):
        paths[name] = save_program(TinyCNN(seed=seed), d / f"{name}.pt2")
    return paths


@pytest.fixture(scope="module")
def attacked(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("adv")
    for name, p in models.items():
        run("attack", p, "--data", "digits", "--n", 40, "--eps", "0.1", "--steps", 3, "-o", d / f"{name}.safetensors")
    return d


def test_version_and_module_entry():
    r = run("--version")
    assert r.stdout.startswith("satkit ")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "satkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("satkit ")


def _all_commands():
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        if sub:
            out += [(name, s) for s in sub]
        else:
            out.append((name,))
    return out


@pytest.mark.parametrize("cmd", _all_commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example(cmd):
    r = run(*cmd, "--help")
    assert "Example" in r.stdout and "satkit" in r.stdout.split("Example", 1)[1]


def test_attack_writes_file_with_bound(attacked):
    from satkit.formats import read_satkit_file

    f = read_satkit_file(attacked / "m1.safetensors", "satkit.attack")
    d = (f.get("adv").int() - f.get("clean").int()).abs().max().item()
    assert d <= 25  # 0.1 * 255 -> 25 steps of 1/255
    assert f.provenance["attack"]["steps"] == 3


def test_transfer_and_matrix_pipeline(models, attacked, tmp_path):
    files = sorted(attacked.glob("*.safetensors"))
    for name, p in models.items():
        run("transfer", p, *files, "-o", tmp_path / f"t_{name}.csv")
    t = pl.read_csv(tmp_path / "t_m1.csv")
    assert t.height == 3 and set(t["source"]) == {"m1", "m2", "m3"} and set(t["target"]) == {"m1"}
    r = run("matrix", *sorted(tmp_path.glob("t_*.csv")), "-o", tmp_path / "sat.csv", "--long", tmp_path / "long.csv")
    sat = pl.read_csv(tmp_path / "sat.csv")
    assert sat.columns == ["model", "m1", "m2", "m3"] and sat["model"].to_list() == ["m1", "m2", "m3"]
    assert pl.read_csv(tmp_path / "long.csv").height == 6
    # stdout when -o is omitted, stdin with -
    r = run("matrix", tmp_path / "t_m1.csv", tmp_path / "t_m2.csv", tmp_path / "t_m3.csv")
    assert r.stdout.splitlines()[0] == "model,m1,m2,m3"
    r2 = runner.invoke(app, ["matrix", "-"], input=pl.concat([pl.read_csv(p) for p in sorted(tmp_path.glob("t_*.csv"))]).write_csv())
    assert r2.exit_code == 0 and r2.stdout == r.stdout


def test_transfer_multiple_targets_and_per_sample(models, attacked, tmp_path):
    files = sorted(attacked.glob("*.safetensors"))
    run("transfer", models["m1"], models["m2"], *files, "-o", tmp_path / "t.csv", "--per-sample", tmp_path / "s.parquet")
    assert pl.read_csv(tmp_path / "t.csv").height == 6
    assert pl.read_parquet(tmp_path / "s.parquet").height == 6 * 40


def test_info(attacked):
    r = run("info", attacked / "m1.safetensors")
    assert "satkit.attack v1" in r.stdout and "rerun: satkit attack" in r.stdout
    j = json.loads(run("info", attacked / "m1.safetensors", "--json").stdout)
    assert j["provenance"]["attack"]["eps"] == 0.1


def test_zoo_list():
    r = run("zoo", "list")
    assert "digits/resnet-s1" in r.stdout.split()


def test_pickled_model_needs_opt_in(tmp_path):
    torch.save(TinyCNN(), str(tmp_path / "full.pt"))
    r = run("attack", tmp_path / "full.pt", "--n", 20, "--steps", 1, "-o", tmp_path / "a.safetensors", ok=False)
    assert_clean_error(r, "--allow-code-execution")
    run("attack", tmp_path / "full.pt", "--allow-pickle", "--n", 20, "--steps", 1, "-o", tmp_path / "a.safetensors")


def test_completions_are_current_and_work():
    """completions/ is what the installed `satkit` prints through typer's public completion interface.

    Every file equals `_SATKIT_COMPLETE=source_<shell> satkit`; the bash one also equals
    `satkit --show-completion` run from bash, and sourced in bash it completes `satkit att`.
    """
    import importlib.util
    import os
    import shlex
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("make_completions", root / "scripts" / "make_completions.py")
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    exe = mc.satkit_command()
    for shell, name in mc.SHELLS:
        assert (root / "completions" / name).read_text() == mc.completion_script(shell, exe), \
            f"run python scripts/make_completions.py ({name} is stale)"
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(exe).parent), os.environ.get("PATH", "")]))
    shown = subprocess.run(["bash", "-c", 'satkit --show-completion; exit "$?"'], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip("\n") + "\n" == (root / "completions" / "satkit.bash").read_text()
    script = (f"source {shlex.quote(str(root / 'completions' / 'satkit.bash'))}; COMP_WORDS=(satkit att); COMP_CWORD=1; "
              '_satkit_completion satkit; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["attack"], (done.stdout, done.stderr)


def test_matrix_bootstrap_ci(models, attacked, tmp_path):
    files = sorted(attacked.glob("*.safetensors"))
    run("transfer", *models.values(), *files, "-o", tmp_path / "t.csv", "--per-sample", tmp_path / "s.parquet")
    run("matrix", tmp_path / "t.csv", "--per-sample", tmp_path / "s.parquet", "--ci", "0.9", "--n-boot", "200",
        "-o", tmp_path / "sat.csv", "--long", tmp_path / "long.csv")
    long = pl.read_csv(tmp_path / "long.csv")
    assert {"sat_ci_low", "sat_ci_high"} <= set(long.columns) and long.height == 6
    # every measured pair gets an interval around its SAT; a pair with an empty X_AB has neither
    ok = long.filter(pl.col("sat").is_not_null())
    assert ok.height >= 1 and ok["sat_ci_low"].is_not_null().all() and ok["sat_ci_high"].is_not_null().all()
    assert (ok["sat_ci_low"] <= ok["sat"] + 1e-12).all() and (ok["sat"] <= ok["sat_ci_high"] + 1e-12).all()
    empty = long.filter(pl.col("sat").is_null())
    assert empty["sat_ci_low"].is_null().all() and empty["sat_ci_high"].is_null().all()
    r = run("matrix", tmp_path / "t.csv", "--ci", "0.9", ok=False)
    assert_clean_error(r, "--per-sample")


def test_info_rerun_command_reproduces_the_file(tmp_path):
    """`satkit info` prints a command line; running it gives identical tensors (same machine, CPU)."""
    import hashlib
    import shlex

    from satkit.attacks import AttackParams, run_attack, save_attack
    from satkit.data import load_data
    from satkit.models import load_model

    res = run_attack(load_model("digits/convmixer-s1"), load_data("digits", n=20), AttackParams(eps=0.1, steps=3), batch_size=8)
    first = save_attack(res, tmp_path / "lib.safetensors")  # written by the library: no recorded command line
    line = next(s for s in run("info", first).stdout.splitlines() if s.strip().startswith("rerun:"))
    argv = shlex.split(line.split("rerun:", 1)[1])
    assert argv[:2] == ["satkit", "attack"] and "--batch-size" in argv
    argv[argv.index("-o") + 1] = str(tmp_path / "again.safetensors")
    run(*argv[1:])
    from satkit.formats import read_satkit_file

    a, b = read_satkit_file(first, "satkit.attack"), read_satkit_file(tmp_path / "again.safetensors", "satkit.attack")
    for key in ("clean", "adv", "labels", "ids", "source_correct", "source_adv_correct", "clean_logits"):
        assert hashlib.sha256(a.get(key).numpy().tobytes()).digest() == hashlib.sha256(b.get(key).numpy().tobytes()).digest(), key
