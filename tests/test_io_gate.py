"""satkit.io as the one gate for outputs: modes, devices and FIFOs, full disks, stdin/stdout, the directory lock."""

from __future__ import annotations

import errno
import io
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from satkit.errors import InputFileError, OutputError
from satkit.formats import read_satkit_file
from satkit.io import atomic
from satkit.io.atomic import atomic_output, check_output_path, check_outputs, current_umask
from satkit.io.lock import LOCK_NAME, DirectoryLock
from satkit.io.tables import write_table
from satkit.io.tensorfile import write_tensor_file

REPO = Path(__file__).resolve().parent.parent


def _no_partials(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.endswith(".partial")]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


# ----------------------------------------------------------------------------- permission bits


def test_replaced_file_keeps_its_mode(tmp_path):
    p = tmp_path / "secret.csv"
    p.write_text("old\n")
    os.chmod(p, 0o600)
    write_table(pl.DataFrame({"a": [1]}), p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.read_text() == "a\n1\n"


def test_new_file_follows_umask(tmp_path, umask_027):
    p = tmp_path / "new.csv"
    write_table(pl.DataFrame({"a": [1]}), p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert current_umask() == 0o027


def test_umask_without_proc(tmp_path, umask_027, monkeypatch):
    def no_proc(*a, **k):
        raise OSError(errno.ENOENT, "no /proc")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # read, and left as it was


def test_new_file_mode_is_not_0644_under_open_umask(tmp_path):
    old = os.umask(0o002)
    try:
        with atomic_output(tmp_path / "g.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.txt").stat().st_mode) == 0o664


# ----------------------------------------------------------------------------- devices, FIFOs, sockets


def test_symlink_to_dev_null_keeps_nothing(tmp_path):
    """The null device is the shell's "keep nothing": written through a private temporary, never replaced."""
    link = tmp_path / "null.csv"
    link.symlink_to(os.devnull)
    write_table(pl.DataFrame({"a": [1]}), link)
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert _no_partials(tmp_path)


def test_symlink_to_another_device_is_refused(tmp_path):
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(OutputError, match="is a device/FIFO, not a file") as e:
        write_table(pl.DataFrame({"a": [1]}), link)
    assert "- for stdout" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert link.is_symlink() and os.readlink(link) == "/dev/zero"


def test_fifo_is_refused(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="device/FIFO"):
        check_output_path(fifo)
    with pytest.raises(OutputError, match="device/FIFO"):
        with atomic_output(fifo) as tmp:
            tmp.write_text("never")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _no_partials(tmp_path)


def test_socket_is_refused(tmp_path):
    path = Path(tempfile.mkdtemp(dir="/tmp")) / "s"  # AF_UNIX paths are short
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        with pytest.raises(OutputError, match="device/FIFO"):
            check_output_path(path)
    finally:
        s.close()
        path.unlink()
        path.parent.rmdir()


def test_dangling_symlink_and_regular_file_are_fine(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    check_output_path(tmp_path / "dangling")
    (tmp_path / "f").write_text("x")
    check_output_path(tmp_path / "f")


# ----------------------------------------------------------------------------- check_outputs


def test_check_outputs_two_options_one_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=r"--output and --long name the same file t.csv; give each output its own path"):
        check_outputs({"--output": "t.csv", "--long": "t.csv"})
    with pytest.raises(OutputError, match="same file"):  # relative vs absolute, file not there yet
        check_outputs({"-o": "t.csv", "--long": tmp_path / "t.csv"})
    (tmp_path / "a.csv").write_text("x")
    os.link(tmp_path / "a.csv", tmp_path / "hard.csv")
    with pytest.raises(OutputError, match="-o and --grid name the same file"):
        check_outputs({"-o": "a.csv", "--grid": "hard.csv"})
    (tmp_path / "sym.csv").symlink_to("a.csv")
    with pytest.raises(OutputError, match="same file"):
        check_outputs({"-o": "a.csv", "--grid": "sym.csv"})
    check_outputs({"-o": "-", "--long": None, "--plot": "p.png"})  # stdout and absent options are skipped
    check_outputs({"-o": "-", "--long": "-"})  # two stdouts are the caller's business


def test_check_outputs_refuses_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.safetensors").write_bytes(b"input")
    with pytest.raises(OutputError, match="-o a.safetensors is also an input; satkit never writes over its inputs"):
        check_outputs({"-o": "a.safetensors"}, ["b.safetensors", "a.safetensors"])
    os.link("a.safetensors", "same_inode.safetensors")
    with pytest.raises(OutputError, match="is also an input"):
        check_outputs({"-o": "same_inode.safetensors"}, [tmp_path / "a.safetensors"])
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match="is also an input"):
        check_outputs({"-o": "sub/../a.safetensors"}, ["a.safetensors"])
    check_outputs({"-o": "missing.csv"}, ["missing.csv", None, "-"])  # inputs that do not exist are reported elsewhere
    assert (tmp_path / "a.safetensors").read_bytes() == b"input"


def test_check_outputs_checks_each_path(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_outputs({"-o": tmp_path / "x.csv", "--long": tmp_path / "no" / "y.csv"})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="device/FIFO"):
        check_outputs({"-o": fifo})


# ----------------------------------------------------------------------------- write failures


@pytest.mark.parametrize("code,words", [
    (errno.ENOSPC, "no space left on device writing"),
    (errno.EDQUOT, "disk quota exceeded writing"),
    (errno.EIO, "I/O error"),
    (errno.EROFS, "read-only file system writing"),
])
def test_write_failure_is_one_line_and_keeps_old_file(tmp_path, code, words):
    p = tmp_path / "t.csv"
    p.write_text("old\n")
    with pytest.raises(OutputError) as e:
        with atomic_output(p) as tmp:
            tmp.write_text("half")
            raise OSError(code, os.strerror(code))
    msg = str(e.value)
    assert words in msg and str(p) in msg and ";" in msg and len(msg.splitlines()) == 1
    assert p.read_text() == "old\n"
    assert _no_partials(tmp_path)


def test_enospc_from_the_table_writer(tmp_path, monkeypatch):
    p = tmp_path / "t.csv"
    p.write_text("old\n")

    def full(self, file, *a, **k):
        Path(file).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", full)
    with pytest.raises(OutputError, match=f"no space left on device writing {p}"):
        write_table(pl.DataFrame({"a": [1]}), p)
    assert p.read_text() == "old\n" and _no_partials(tmp_path)


def test_enospc_reported_in_a_rust_writer_message(tmp_path):
    p = tmp_path / "w.safetensors"
    with pytest.raises(OutputError, match="no space left on device"):
        with atomic_output(p):
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull }) (os error 28)")
    assert not p.exists() and _no_partials(tmp_path)


def test_enospc_at_fsync(tmp_path, monkeypatch):
    p = tmp_path / "t.csv"
    p.write_text("old\n")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OutputError, match="no space left on device"):
        write_table(pl.DataFrame({"a": [1]}), p)
    assert p.read_text() == "old\n" and _no_partials(tmp_path)


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_output(tmp_path / "o.csv"):
            open(tmp_path / "some_input_that_is_missing")
    with pytest.raises(ValueError):
        with atomic_output(tmp_path / "o.csv"):
            raise ValueError("a bug")
    assert not (tmp_path / "o.csv").exists() and _no_partials(tmp_path)


# ----------------------------------------------------------------------------- - for stdout / stdin


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=g),
        "labels": torch.arange(6, dtype=torch.int64) % 3,
        "ids": torch.arange(6, dtype=torch.int64),
    }


PROV = {"num_classes": 3, "source": "test", "b": [1, 2], "a": {"z": 1, "y": 2}}


class _Std(io.TextIOWrapper):
    def isatty(self):
        return False


def _stdout(monkeypatch) -> io.BytesIO:
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", _Std(buf, encoding="utf-8"))
    return buf


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", _Std(io.BytesIO(data), encoding="utf-8"))


def test_write_dash_gives_the_file_bytes_on_stdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tensor_file(tmp_path / "f.safetensors", "satkit.data", _tensors(), PROV)
    buf = _stdout(monkeypatch)
    write_tensor_file("-", "satkit.data", _tensors(), PROV)
    assert buf.getvalue() == (tmp_path / "f.safetensors").read_bytes()
    assert not (tmp_path / "-").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.safetensors"]


def test_read_dash_spools_stdin_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    write_tensor_file(tmp_path / "f.safetensors", "satkit.data", _tensors(), PROV)
    _stdin(monkeypatch, (tmp_path / "f.safetensors").read_bytes())
    f = read_satkit_file("-", "satkit.data")
    assert f.path.parent == tmp_path and f.path.name.startswith("satkit-stdin-")
    assert f.format == "satkit.data" and f.provenance == PROV
    assert torch.equal(f.get("images"), _tensors()["images"])
    again = read_satkit_file("-", ("satkit.data", "satkit.attack"))
    assert again.path == f.path  # the stream was read once
    with pytest.raises(InputFileError, match="stdin: tensor 'nope' is missing") as e:
        f.get("nope")
    assert str(f.path) not in str(e.value)


def test_read_dash_errors_name_stdin(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _stdin(monkeypatch, b"")
    with pytest.raises(InputFileError, match="^stdin: empty input, expected a satkit attack file$"):
        read_satkit_file("-", "satkit.attack")
    _stdin(monkeypatch, b"this is not safetensors")
    with pytest.raises(InputFileError, match="^stdin: not a readable safetensors file") as e:
        read_satkit_file("-", "satkit.attack")
    assert "satkit-stdin-" not in str(e.value)
    write_tensor_file(tmp_path / "f.safetensors", "satkit.data", _tensors(), PROV)
    _stdin(monkeypatch, (tmp_path / "f.safetensors").read_bytes())
    with pytest.raises(InputFileError, match="^stdin: is a satkit.data file, expected satkit.attack"):
        read_satkit_file("-", "satkit.attack")
    assert not (tmp_path / "-").exists()


def test_stdin_spool_is_removed_at_exit(tmp_path, monkeypatch):
    import atexit

    at_exit = []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(atexit, "register", lambda fn, *a: at_exit.append((fn, a)))
    write_tensor_file(tmp_path / "f.safetensors", "satkit.data", _tensors(), PROV)
    _stdin(monkeypatch, (tmp_path / "f.safetensors").read_bytes())
    f = read_satkit_file("-", "satkit.data")
    assert f.get("labels").tolist() == [0, 1, 2, 0, 1, 2]
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f.path.name]
    for fn, a in at_exit:
        fn(*a)
    assert list((tmp_path / "tmp").iterdir()) == []


# ----------------------------------------------------------------------------- directory lock

HOLDER = textwrap.dedent("""
    import sys
    from satkit.io.lock import DirectoryLock
    with DirectoryLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def _holder(d: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(d)], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_lock_held_by_another_process(tmp_path):
    holder = _holder(tmp_path)
    try:
        record = (tmp_path / LOCK_NAME).read_bytes()
        assert str(holder.pid).encode() in record
        with pytest.raises(OutputError) as e:
            with DirectoryLock(tmp_path):
                pass
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path} is in use by another satkit run (pid {holder.pid}, started ")
        assert msg.endswith("; wait for it or use another directory") and len(msg.splitlines()) == 1
        assert (tmp_path / LOCK_NAME).read_bytes() == record  # the loser writes nothing
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with DirectoryLock(tmp_path) as lock:  # free again once the holder is done
        assert lock.locked and str(os.getpid()).encode() in (tmp_path / LOCK_NAME).read_bytes()


def test_lock_wait_blocks_until_free(tmp_path):
    holder = _holder(tmp_path)
    messages = []

    def on_wait(msg):
        messages.append(msg)
        holder.stdin.write("done\n")  # the holder finishes while we wait
        holder.stdin.flush()

    try:
        t0 = time.monotonic()
        with DirectoryLock(tmp_path, wait=True, on_wait=on_wait) as lock:
            assert lock.locked
            assert holder.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 20
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert len(messages) == 1 and f"pid {holder.pid}" in messages[0]


def test_lock_of_a_killed_process_is_free(tmp_path):
    holder = _holder(tmp_path)
    holder.kill()
    holder.wait(timeout=30)
    with DirectoryLock(tmp_path, "study"):
        pass
    with DirectoryLock(tmp_path):  # and reusable after release
        pass


def test_lock_needs_the_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        with DirectoryLock(tmp_path / "none"):
            pass
