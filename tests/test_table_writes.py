"""Writing tables: a full disk is one line and keeps the old file; model names a spreadsheet
would run as formulas (``=1+1.pt2``) are refused where names are made, and no table writer
puts such a cell into a CSV (issue 20, section 5)."""

from __future__ import annotations

import csv
import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from safetensors.torch import load_file, save_file

from satkit.errors import ModelError, OutputError
from satkit.io.cells import check_model_name, formula_like
from satkit.io.tables import write_table
from tests.cli_helpers import SENTINEL, assert_clean_error, run
from tests.hostile import clean_pt2

MODEL = "digits/resnet-s1"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """An attack file and its transfer table from a zoo model (no TorchScript, no pickle)."""
    d = tmp_path_factory.mktemp("tables")
    run("attack", MODEL, "--n", "30", "--steps", "1", "-o", d / "adv.safetensors")
    run("transfer", MODEL, d / "adv.safetensors", "-o", d / "t.csv")
    return d


def _no_partials(d: Path) -> None:
    assert not [p.name for p in d.iterdir() if p.name.endswith(".partial")]


def _csv_cells(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            yield from row


def assert_no_formula_cells(*paths: Path) -> None:
    """No cell of these CSVs begins with = + - @ tab CR unless it is a number."""
    for p in paths:
        bad = [c for c in _csv_cells(p) if formula_like(c)]
        assert not bad, (p, bad)


# ----------------------------------------------------------------------------- full disk


def _fake_polars_enospc(monkeypatch, message="No space left on device (os error 28)"):
    """polars' own failure on a full disk: OSError with the code only in the message, errno None."""
    orig = pl.DataFrame.write_csv

    def write_csv(self, file=None, *args, **kwargs):
        if file is None:  # to a string (stdout): nothing is written to disk
            return orig(self, None, *args, **kwargs)
        Path(file).write_bytes(b"model,half a row")  # a writer that fails midway leaves bytes behind
        raise OSError(message)

    monkeypatch.setattr(pl.DataFrame, "write_csv", write_csv)
    assert OSError(message).errno is None


@pytest.mark.parametrize("cmd", ["transfer", "matrix", "matrix-long"])
def test_polars_enospc_is_one_line_and_keeps_the_old_file(ws, tmp_path, monkeypatch, cmd):
    out = tmp_path / "out.csv"
    out.write_bytes(SENTINEL)
    _fake_polars_enospc(monkeypatch)
    if cmd == "transfer":
        r = run("transfer", "-q", MODEL, ws / "adv.safetensors", "-o", out, ok=False)
    elif cmd == "matrix":
        r = run("matrix", ws / "t.csv", "-o", out, ok=False)
    else:  # the matrix goes to stdout (no file), --long to the full disk
        r = run("matrix", ws / "t.csv", "-o", "-", "--long", out, ok=False)
    assert_clean_error(r, "no space left on device", str(out), "free some space")
    assert out.read_bytes() == SENTINEL
    _no_partials(tmp_path)


def test_any_other_writer_failure_names_the_path_and_the_cause(ws, tmp_path, monkeypatch):
    out = tmp_path / "t.csv"
    out.write_bytes(SENTINEL)
    _fake_polars_enospc(monkeypatch, message="the writer gave up\n  (second line)")
    r = run("transfer", "-q", MODEL, ws / "adv.safetensors", "-o", out, ok=False)
    assert_clean_error(r, f"cannot write {out}", "the writer gave up (second line)")
    assert out.read_bytes() == SENTINEL
    _no_partials(tmp_path)


def test_parquet_enospc_from_polars_compute_error(tmp_path, monkeypatch):
    def write_parquet(self, file, *args, **kwargs):
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_parquet)
    out = tmp_path / "s.parquet"
    out.write_bytes(SENTINEL)
    with pytest.raises(OutputError, match="no space left on device writing .*s.parquet"):
        write_table(pl.DataFrame({"a": [1]}), out)
    assert out.read_bytes() == SENTINEL
    _no_partials(tmp_path)


def test_stdout_on_a_full_disk(monkeypatch):
    class Full(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    with pytest.raises(OutputError, match="no space left on device writing stdout"):
        write_table(pl.DataFrame({"a": [1]}), "-")


@pytest.fixture
def full_fs(tmp_path):
    """A real file system with no space left: a 256 kB tmpfs, filled.

    Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped and the
    monkeypatched tests above cover the same code path on every machine.
    """
    d = tmp_path / "full"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the monkeypatched full-disk tests cover this path")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({' '.join((r.stderr or r.stdout).split())[:120]}); "
                    "the monkeypatched full-disk tests cover this path")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill(d: Path) -> None:
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        (d / "probe").write_bytes(b"x" * 8192)
    (d / "probe").unlink(missing_ok=True)


def test_real_full_disk_transfer_and_matrix(ws, full_fs):
    for name in ("t.csv", "sat.csv", "long.csv"):
        (full_fs / name).write_bytes(SENTINEL)
    _fill(full_fs)
    r = run("transfer", "-q", MODEL, ws / "adv.safetensors", "-o", full_fs / "t.csv", ok=False)
    assert_clean_error(r, "no space left on device", str(full_fs / "t.csv"))
    r = run("matrix", ws / "t.csv", "-o", full_fs / "sat.csv", ok=False)
    assert_clean_error(r, "no space left on device", str(full_fs / "sat.csv"))
    r = run("matrix", ws / "t.csv", "-o", ws / "sat_ok.csv", "--long", full_fs / "long.csv", ok=False)
    assert_clean_error(r, "no space left on device", str(full_fs / "long.csv"))
    for name in ("t.csv", "sat.csv", "long.csv"):
        assert (full_fs / name).read_bytes() == SENTINEL, name
    _no_partials(full_fs)


# ----------------------------------------------------------------------------- formula names


@pytest.mark.parametrize("cell, formula", [
    ("=1+1", True), ("@SUM(1+9)", True), ("+cmd", True), ("-x", True), ("\t=1", True), ("\r1", True),
    ("-1.5", False), ("+3", False), ("-inf", False), ("1e-3", False), ("a=1", False), ("", False),
    ("digits/resnet-s1", False), ("hf-hub:timm/resnet18.a1_in1k", False),
])
def test_formula_like(cell, formula):
    assert formula_like(cell) is formula


def test_check_model_name_is_one_line():
    with pytest.raises(ModelError) as ei:
        check_model_name("=HYPERLINK(\"http://x\")\n")
    assert "\n" not in str(ei.value) and "rename the model file" in str(ei.value)
    assert check_model_name("resnet50.a1_in1k") == "resnet50.a1_in1k"


@pytest.fixture(scope="module")
def formula_files(ws):
    """A zoo state dict saved as ``=1+1.safetensors`` and a clean export as ``@SUM(1+9).pt2``."""
    from satkit.models import zoo

    st = ws / "=1+1.safetensors"
    save_file(load_file(str(zoo.find_weights("resnet-s1"))), str(st))
    pt2 = clean_pt2(ws / "@SUM(1+9).pt2")
    return st, pt2


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_formula_file_names_are_refused_before_any_work(ws, formula_files, tmp_path):
    st, pt2 = formula_files
    before = _listing(ws)
    cases = [
        (["attack", st, "--arch", "digits/resnet", "--n", "30", "--steps", "1", "-o", tmp_path / "a.safetensors"], "'=1+1'"),
        (["attack", pt2, "--n", "30", "--steps", "1", "-o", tmp_path / "a.safetensors"], "'@SUM(1+9)'"),
        (["logits", pt2, "--n", "30", "-o", tmp_path / "l.safetensors"], "'@SUM(1+9)'"),
        (["transfer", st, "--arch", "digits/resnet", ws / "adv.safetensors", "-o", tmp_path / "t.csv"], "'=1+1'"),
        (["study", pt2, "digits/vit-s1", "--n", "30", "--steps", "1", "-o", tmp_path / "study"], "'@SUM(1+9)'"),
    ]
    for args, words in cases:
        r = run(*args, ok=False)
        assert_clean_error(r, words, "spreadsheets run as a formula", "rename the model file")
    r = run("attack", MODEL, "--name=-cmd|' /C calc'!A0", "--n", "30", "-o", tmp_path / "a.safetensors", ok=False)
    assert_clean_error(r, "begins with '-'", "choose another --name")
    assert list(tmp_path.iterdir()) == []  # no output, no study directory
    assert _listing(ws) == before


def test_name_overrides_a_formula_file_name_and_the_tables_stay_clean(ws, formula_files, tmp_path):
    st, pt2 = formula_files
    run("attack", pt2, "--name", "sum-model", "--n", "30", "--steps", "1", "-o", tmp_path / "a.safetensors")
    run("transfer", MODEL, tmp_path / "a.safetensors", ws / "adv.safetensors", "-o", tmp_path / "t.csv")
    run("matrix", tmp_path / "t.csv", ws / "t.csv", "-o", tmp_path / "sat.csv", "--long", tmp_path / "long.csv")
    t = pl.read_csv(tmp_path / "t.csv")
    assert sorted(t["source"].to_list()) == [MODEL, "sum-model"]
    assert_no_formula_cells(tmp_path / "t.csv", tmp_path / "sat.csv", tmp_path / "long.csv")


def test_a_formula_name_from_a_table_satkit_did_not_write_is_not_written(ws, tmp_path):
    """A hand-edited transfer table (or a shared study's) naming `=1+1`: matrix refuses to write the cell."""
    table = tmp_path / "edited.csv"
    table.write_text((ws / "t.csv").read_text().replace(MODEL, "=1+1"))
    out = tmp_path / "sat.csv"
    out.write_bytes(SENTINEL)
    r = run("matrix", table, "-o", out, ok=False)
    assert_clean_error(r, f"not writing {out}", "'=1+1'", "spreadsheets run as a formula")
    assert out.read_bytes() == SENTINEL
    r = run("matrix", table, "-o", "-", ok=False)
    assert_clean_error(r, "not writing stdout", "'=1+1'")
    _no_partials(tmp_path)


def test_write_table_refuses_formula_cells_but_writes_numbers(tmp_path):
    ok = pl.DataFrame({"model": ["a", "-1"], "x": [-1.5, 2.0], "s": ["-inf", None]})
    write_table(ok, tmp_path / "ok.csv")
    assert pl.read_csv(tmp_path / "ok.csv").shape == (2, 3)
    for bad in (pl.DataFrame({"@x": [1]}), pl.DataFrame({"m": ["a", "+x"]}),
                pl.DataFrame({"m": pl.Series(["=1"], dtype=pl.Categorical)})):
        with pytest.raises(OutputError, match="spreadsheets run as a formula"):
            write_table(bad, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_distill_metrics_row_is_checked_before_training(tmp_path):
    r = run("distill", "--student", "digits/vit", "-o", tmp_path / "=s.safetensors", "--metrics", tmp_path / "m.csv",
            "--epochs", "1", ok=False)
    assert_clean_error(r, "not writing", "'=s'", "column 'student'")
    assert list(tmp_path.iterdir()) == []
