"""Paths around a study and inside --data (issue 20, section 2): no run writes, truncates or deletes
a file outside its outputs, whatever links, shared folders or shards the directory holds.

Each test builds the hostile layout itself and checks, besides the one-line error, that every file
outside the outputs is exactly as it was (a snapshot of the whole tree: type, link target, bytes, mtime).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from satkit.errors import OutputError

from cli_helpers import assert_clean_error, run

REPO = Path(__file__).resolve().parent.parent
M1, M2 = "digits/resnet-s1", "digits/vit-s1"
STUDY_ARGS = [M1, M2, "--n", "30", "--steps", "1", "--no-analyses"]


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (not following links): type, link target, bytes, mtime."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            data = Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else None
            snap[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), link, data, st.st_mtime_ns)
    return snap


def make_fake_study(d: Path, models=(M1, M2)) -> Path:
    """A study directory with a valid study.json and a file of every kind (bytes of our choosing):
    enough for every check that runs before any work, and each file a victim to watch."""
    from satkit.attacks import AttackParams
    from satkit.data import DataRequest
    from satkit.study.layout import StudyDir, StudySettings, slug, write_settings

    d.mkdir(parents=True, exist_ok=True)
    for sub in ("attacks", "transfer", "logits"):
        (d / sub).mkdir(exist_ok=True)
    write_settings(StudyDir(d), StudySettings(models=tuple(models), data=DataRequest("digits", 30), amp="off", eps_s=1.0,
                                              params=AttackParams(eps=0.1, steps=1), fingerprint="0" * 64))
    (d / "sat.csv").write_text("model,a\na,4.6\n")
    for m in models:
        (d / "attacks" / f"{slug(m)}.safetensors").write_bytes(b"attack file of " + m.encode())
        (d / "transfer" / f"{slug(m)}.csv").write_text(f"table of {m}\n")
    return d


# ----------------------------------------------------------------------------- 1. the study lock


@pytest.mark.parametrize("victim_exists", [True, False], ids=["victim", "dangling"])
def test_symlinked_lock_file_is_refused_and_victim_untouched(tmp_path, victim_exists):
    victim = tmp_path / "victim.txt"
    if victim_exists:
        victim.write_text("precious\n")
    study = tmp_path / "study"
    study.mkdir()
    (study / ".satkit.lock").symlink_to("../victim.txt")
    before = snapshot(tmp_path)
    r = run("study", *STUDY_ARGS, "-o", study, ok=False)
    assert_clean_error(r, ".satkit.lock", "symbolic link")
    assert snapshot(tmp_path) == before  # victim neither truncated nor created; nothing made in the study


@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "hardlink", "directory"])
def test_directory_lock_opens_only_a_plain_file(tmp_path, kind):
    from satkit.io.lock import LOCK_NAME, DirectoryLock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    d = tmp_path / "study"
    d.mkdir()
    lock = d / LOCK_NAME
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dangling":
        lock.symlink_to(tmp_path / "created.txt")
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "hardlink":
        os.link(victim, lock)
    else:
        lock.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(OutputError) as e:
        with DirectoryLock(d):
            pass
    msg = str(e.value)
    assert "\n" not in msg and LOCK_NAME in msg and "satkit never writes through it" in msg
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- 2. links inside a study


LINKED = ["attacks", "transfer", "logits", "chunks", "study.json", "sat.csv", "attacks/file"]


@pytest.mark.parametrize("where", LINKED)
def test_symlink_inside_a_study_is_refused_before_any_work(tmp_path, where):
    """A link in the study would redirect writes (the rename lands in the target) and the
    stale-partial cleanup (it deleted .partial files in the target)."""
    from satkit.study.layout import slug

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{slug(M1)}.safetensors").write_bytes(b"someone else's file")
    (elsewhere / f".{slug(M1)}.safetensors.abcd1234.partial").write_bytes(b"someone else's temporary")
    (elsewhere / "victim.json").write_text('{"mine": true}\n')
    study = tmp_path / "study"
    study.mkdir()
    if where == "attacks/file":
        (study / "attacks").mkdir()
        (study / "attacks" / f"{slug(M1)}.safetensors").symlink_to(elsewhere / f"{slug(M1)}.safetensors")
    elif "." in where:
        (study / where).symlink_to(elsewhere / "victim.json")
    else:
        (study / where).symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    r = run("study", *STUDY_ARGS, "-o", study, ok=False)
    assert_clean_error(r, "symbolic link", "inside a study")
    assert snapshot(tmp_path) == before


def test_symlinked_chunk_of_an_adaptive_study_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "attacks").mkdir(parents=True)
    (elsewhere / "attacks" / ".x.safetensors.abcd1234.partial").write_bytes(b"theirs")
    study = tmp_path / "study"
    (study / "chunks").mkdir(parents=True)
    (study / "chunks" / "0000").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    r = run("study", M1, M2, "--steps", "1", "--precision", "0.5", "--chunk", "30", "--n", "30", "--no-analyses",
            "-o", study, ok=False)
    assert_clean_error(r, "0000", "symbolic link")
    assert snapshot(tmp_path) == before


def test_study_root_may_be_a_link(tmp_path):
    """The output directory itself may be a link (e.g. to another disk): only links inside it are refused."""
    from satkit.study import StudyConfig
    from satkit.study.run import check_study_outputs

    real = make_fake_study(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    check_study_outputs(StudyConfig.create([M1, M2], link, n=30))


# ----------------------------------------------------------------------------- 3. every file a command reads


@pytest.fixture
def fake_study(tmp_path):
    return make_fake_study(tmp_path / "study")


@pytest.mark.parametrize("opt,target", [
    ("-o", "study.json"), ("-o", "sat.csv"), ("-o", "transfer/digits__resnet-s1.csv"),
    ("--summary", "attacks/digits__vit-s1.safetensors"), ("--save-attack", "attacks/digits__resnet-s1.safetensors"),
    ("-o", "attacks/new.csv"), ("-o", "logits/new.csv"),
])
def test_approx_never_writes_over_the_study_it_reads(tmp_path, fake_study, opt, target):
    before = snapshot(tmp_path)
    r = run("approx", "digits/mixer-s1", "--study", fake_study, opt, fake_study / target, ok=False)
    assert_clean_error(r, "is also an input", "never writes over its inputs")
    assert snapshot(tmp_path) == before


def test_approx_may_write_its_own_files_into_the_study(fake_study):
    from satkit.io.atomic import check_outputs
    from satkit.study.approx import approx_inputs

    check_outputs({"-o": fake_study / "approx-new.csv", "--summary": fake_study / "approx-new.json"},
                  approx_inputs(fake_study))


def test_approx_library_checks_save_attack_against_the_study(fake_study):
    from satkit.study.approx import approx_from_study

    with pytest.raises(OutputError, match="is also an input"):
        approx_from_study("digits/mixer-s1", fake_study, save_attack_to=fake_study / "attacks" / "digits__vit-s1.safetensors")


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "data"
    for c in ("a", "b"):
        (d / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + 100, np.uint8)).save(d / c / f"img{i}.png")
    return d


@pytest.mark.parametrize("target", ["a/img0.png", "a/new.png", "new.safetensors"])
def test_attack_never_writes_into_its_data_folder(tmp_path, folder, target):
    before = snapshot(tmp_path)
    r = run("attack", M1, "--data", folder, "--steps", "1", "-o", folder / target, ok=False)
    assert_clean_error(r, "lies in", "is also an input")
    assert snapshot(tmp_path) == before


def test_output_linked_into_the_data_folder_is_refused(tmp_path, folder):
    """A symlinked or hard-linked name outside the folder for one of its images is one of its files too."""
    out = tmp_path / "out"
    out.mkdir()
    os.link(folder / "a" / "img0.png", out / "hard.png")
    (out / "soft.png").symlink_to(folder / "b" / "img1.png")
    (out / "dir").symlink_to(folder / "a", target_is_directory=True)
    before = snapshot(tmp_path)
    for o in ("hard.png", "soft.png", "dir/new.png"):
        r = run("logits", M1, "--data", folder, "-o", out / o, ok=False)
        assert_clean_error(r, "is also an input")
    assert snapshot(tmp_path) == before


def test_labels_file_is_an_input(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "x.png")
    (tmp_path / "labels.csv").write_text("x.png,0\n")
    before = snapshot(tmp_path)
    r = run("attack", M1, "--data", flat, "--labels", tmp_path / "labels.csv", "-o", tmp_path / "labels.csv", ok=False)
    assert_clean_error(r, "is also an input")
    assert snapshot(tmp_path) == before


def test_study_is_none_of_its_inputs(tmp_path, folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "x.png")
    labels = tmp_path / "s" / "sat.csv"  # a labels file where the study writes its matrix
    labels.parent.mkdir()
    labels.write_text("x.png,0\n")
    before = snapshot(tmp_path)
    r = run("study", M1, M2, "--data", folder, "--steps", "1", "-o", folder / "study", ok=False)
    assert_clean_error(r, "lies in", "is also an input")
    r = run("study", M1, M2, "--data", flat, "--labels", labels, "--steps", "1", "-o", tmp_path / "s", ok=False)
    assert_clean_error(r, "sat.csv", "is also an input")
    (tmp_path / "s" / "attacks").mkdir()
    inside = tmp_path / "s" / "attacks" / "labels.csv"
    inside.write_text("x.png,0\n")
    before = snapshot(tmp_path)
    r = run("study", M1, M2, "--data", flat, "--labels", inside, "--steps", "1", "-o", tmp_path / "s", ok=False)
    assert_clean_error(r, "labels.csv", "inside the study's attacks/ folder")
    assert snapshot(tmp_path) == before


def test_data_folder_scan_reads_directory_entries_only(tmp_path, folder, monkeypatch):
    """An output that does not exist is decided by its path; one that exists costs a listing, not a stat per image."""
    from satkit.io import atomic

    calls = []
    real_stat = os.stat
    monkeypatch.setattr(atomic.os, "stat", lambda p, *a, **k: calls.append(str(p)) or real_stat(p, *a, **k))
    out = tmp_path / "elsewhere.csv"
    out.write_text("x")
    atomic.check_outputs({"-o": out}, [folder])
    assert calls and not [c for c in calls if c.startswith(str(folder) + os.sep)]  # the folder itself only


# ----------------------------------------------------------------------------- 4. shards and partials


_WRITER = """
import sys, time
from satkit.io.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half written")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _start_writer(path: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline().strip()
    assert line, "writer did not start"
    return proc, Path(line)


def test_cleanup_keeps_a_live_writers_partial_and_removes_a_dead_ones(tmp_path):
    """Another process (a shard) is writing attacks/x: a cleanup must leave its temporary alone;
    once that writer is killed (-9: no cleanup of its own), the next cleanup removes it."""
    from satkit.study.layout import StudyDir

    study = StudyDir(tmp_path)
    for d in study.subdirs():
        d.mkdir()
    proc, partial = _start_writer(tmp_path / "attacks" / "x.safetensors")
    try:
        assert partial.exists() and partial.name.endswith(f"@{proc.pid}.partial")
        study.remove_stale_partials()
        assert partial.read_bytes() == b"half written"
    finally:
        proc.kill()
        proc.wait()
    study.remove_stale_partials()
    assert not partial.exists()


def test_partial_rules(tmp_path):
    """The lock decides for any name; on this host the pid must be gone too; another host's needs age."""
    import fcntl

    from satkit.io.partials import FOREIGN_STALE_S, host_tag, remove_stale_partials

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = host_tag()
    files = {
        "legacy": ".a.csv.x1y2z3w4.partial",                      # older satkit: no writer in the name
        "mine-alive": f".b.csv.x1y2z3w4.{here}@{os.getpid()}.partial",  # this process is writing it
        "mine-dead": f".c.csv.x1y2z3w4.{here}@{dead.pid}.partial",
        "locked-dead": f".d.csv.x1y2z3w4.{here}@{dead.pid}.partial",  # pid reused elsewhere? the lock is held
        "foreign-young": ".e.csv.x1y2z3w4.otherhost@1.partial",
        "foreign-old": ".f.csv.x1y2z3w4.otherhost@1.partial",
    }
    for f in files.values():
        (tmp_path / f).write_bytes(b"x")
    old = time.time() - FOREIGN_STALE_S - 60
    os.utime(tmp_path / files["foreign-old"], (old, old))
    (tmp_path / ".g.csv.link.partial").symlink_to(tmp_path / files["mine-alive"])  # never followed nor removed
    fd = os.open(tmp_path / files["locked-dead"], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = {p.name for p in remove_stale_partials(tmp_path)}
    finally:
        os.close(fd)
    assert removed == {files["legacy"], files["mine-dead"], files["foreign-old"]}
    assert (tmp_path / ".g.csv.link.partial").is_symlink()


def test_atomic_output_names_and_locks_its_partial(tmp_path):
    import fcntl

    from satkit.io.atomic import atomic_output
    from satkit.io.partials import host_tag

    long = "m" * 240 + ".csv"  # the temporary's name still fits in 255 bytes
    with atomic_output(tmp_path / long) as tmp:
        assert tmp.name.endswith(f".{host_tag()}@{os.getpid()}.partial") and len(tmp.name) <= 255
        fd = os.open(tmp, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        tmp.write_text("done\n")
    assert (tmp_path / long).read_text() == "done\n"


@pytest.mark.slow
def test_shard_run_keeps_a_live_writers_partial(tmp_path):
    """A real shard run (no lock, by design) next to a live writer in the same study: its cleanup
    leaves the writer's temporary alone; the study root is a link (allowed)."""
    from satkit.attacks import AttackParams
    from satkit.study import StudyConfig, run_study

    real = tmp_path / "real"
    (real / "attacks").mkdir(parents=True)
    root = tmp_path / "study"
    root.symlink_to(real, target_is_directory=True)
    proc, partial = _start_writer(real / "attacks" / "other-shard.safetensors")
    try:
        res = run_study(StudyConfig.create([M1, M2], root, params=AttackParams(eps=0.1, steps=1), n=30, analyses=False),
                        shard=(0, 2))
        assert res.waiting and res.attacks_run == 1
        assert partial.read_bytes() == b"half written"
    finally:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------- 5. SIGTERM and the stdin spool


@pytest.mark.slow
def test_sigterm_removes_the_stdin_spool(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "satkit", "transfer", M1, "-", "-o", str(tmp_path / "t.csv")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        proc.stdin.write(b"\0" * (3 << 20))  # the start of a big attack file; the pipe stays open
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not list(tmpdir.glob("satkit-stdin-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no spool appeared"
            time.sleep(0.05)
        spool = next(tmpdir.glob("satkit-stdin-*"))
        while spool.stat().st_size < (1 << 20):  # spooled in 1 MiB blocks: wait for the first one
            assert time.monotonic() < deadline, "the spool did not grow"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    err = proc.stderr.read().decode()
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert not list(tmpdir.iterdir()), list(tmpdir.iterdir())
    assert not (tmp_path / "t.csv").exists()
