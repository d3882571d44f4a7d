"""Shell idioms a user reaches for first: -o /dev/null, a typo in a model name, a file given to the wrong command."""

from __future__ import annotations

import os
import stat

import pytest

from cli_helpers import assert_clean_error, run


@pytest.fixture(scope="module")
def attack_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("idioms")
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", d / "a.safetensors")
    return d / "a.safetensors"


def _null_is_intact():
    st = os.stat(os.devnull)
    return stat.S_ISCHR(st.st_mode)


def test_output_to_the_null_device_runs_and_keeps_nothing(attack_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the discarded bytes go while written
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", os.devnull)
    run("transfer", "digits/resnet-s2", attack_file, "-o", os.devnull, "--per-sample", os.devnull)
    assert _null_is_intact()
    assert list(tmp_path.iterdir()) == []  # the temporary was removed


def test_a_link_to_the_null_device_is_the_null_device(attack_file, tmp_path):
    link = tmp_path / "sink.csv"
    link.symlink_to(os.devnull)
    run("transfer", "digits/resnet-s2", attack_file, "-o", link)
    assert link.is_symlink() and _null_is_intact()


def test_other_devices_are_still_refused(attack_file, tmp_path):
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    r = run("transfer", "digits/resnet-s2", attack_file, "-o", fifo, ok=False)
    assert_clean_error(r, "device/FIFO", os.devnull)


def test_a_typo_suggests_the_closest_names_first():
    r = run("attack", "resnet5o", "-o", "/tmp/never-written.safetensors", ok=False)
    assert_clean_error(r, "closest: resnet50")


@pytest.mark.parametrize("command", [["matrix"], ["cluster"], ["compare", "{f}"]])
def test_a_satkit_file_given_to_a_table_command_is_named(attack_file, command):
    argv = [a.format(f=attack_file) for a in command] + [str(attack_file)]
    r = run(*argv, ok=False)
    assert_clean_error(r, "satkit.attack", "satkit transfer")
