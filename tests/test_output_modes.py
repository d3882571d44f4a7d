"""Output that fits where it goes: off a terminal (CI logs, `2> log`) progress is plain lines,
tables are full width and plain, and a study's progress display ends with every bar full."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from rich.console import Console
from rich.table import Table

from satkit.cli import common as c
from tests.cli_helpers import run
from tests.conftest import TinyCNN, save_program

ANSI = re.compile(r"\x1b\[")
LONG = ["cnn_alpha_with_a_long_descriptive_name", "cnn_beta_with_a_long_descriptive_name"]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def plain(step=5, interval=10.0, min_gap=1.0, warmup=0.0):
    lines: list[str] = []
    clock = FakeClock()
    p = c.PlainProgress(lines.append, step=step, interval=interval, min_gap=min_gap, warmup=warmup, clock=clock)
    return PlainProgressHarness(p, lines, clock)


class PlainProgressHarness:
    def __init__(self, p, lines, clock):
        self.p, self.lines, self.clock = p, lines, clock


# ---------------------------------------------------------------- plain progress lines


def test_plain_progress_prints_a_line_every_few_percent_and_one_at_the_end():
    h = plain(step=5)
    t = h.p.add_task("attack m", total=1000)
    h.p.update(t, completed=0, total=1000)
    assert h.lines == []  # nothing done yet: no line
    for done in range(10, 1001, 10):  # 1 % per update, 2 s apart
        h.clock.t += 2
        h.p.update(t, completed=done, total=1000)
    assert len(h.lines) == 20  # 5 %, 10 %, ..., 95 %, then the end
    assert h.lines[0].startswith("attack m: 50/1000 (5%), 10.0 s, about 190 s left")
    assert h.lines[-1] == "attack m: 1000/1000 (100%), 200.0 s"
    h.p.close()
    assert len(h.lines) == 20  # nothing printed twice


def test_plain_progress_is_silent_during_the_warmup_then_catches_up():
    h = plain(step=5, warmup=10.0)
    a = h.p.add_task("attack a (done before)", total=30)
    h.p.update(a, completed=30, total=30)
    b = h.p.add_task("attack b", total=100)
    for done in range(0, 101, 10):  # 10 % every 2 s: done at 20 s
        h.p.update(b, completed=done, total=100)
        if h.clock.t < 10:
            assert h.lines == []
        h.clock.t += 2
    assert h.lines[0] == "attack a (done before): 30/30"  # held, printed when the warmup ended
    assert h.lines[1].startswith("attack b: 50/100 (50%), 10.0 s")
    assert h.lines[-1] == "attack b: 100/100 (100%), 20.0 s"


def test_plain_progress_a_short_command_prints_at_its_end_only():
    h = plain(warmup=10.0)
    t = h.p.add_task("logits m", total=20)
    h.clock.t += 3
    h.p.update(t, completed=20, total=20)
    assert h.lines == []
    h.p.close()
    assert h.lines == ["logits m: 20/20"]


def test_plain_progress_prints_after_the_interval_when_percent_moves_slowly():
    h = plain(step=5, interval=10.0)
    t = h.p.add_task("transfer m", total=10_000)
    for k in range(1, 31):  # 0.01 % per update, 1 s apart: only the 10 s rule prints
        h.clock.t += 1
        h.p.update(t, completed=k, total=10_000)
    assert len(h.lines) == 3 and h.lines[0].startswith("transfer m: 10/10000 (0%), 10.0 s")


def test_plain_progress_fast_tasks_print_only_their_last_line():
    h = plain(min_gap=1.0)
    t = h.p.add_task("transfer m", total=3)
    for k in range(4):
        h.clock.t += 0.01
        h.p.update(t, completed=k, total=3)
    assert h.lines == ["transfer m: 3/3 (100%), 0.0 s"]


def test_plain_progress_work_done_before_is_one_line_without_a_time():
    h = plain()
    t = h.p.add_task("attack m (done before)", total=540)
    h.p.update(t, completed=540, total=540)
    assert h.lines == ["attack m (done before): 540/540"]


def test_plain_progress_a_failed_command_prints_no_last_line_before_its_error(monkeypatch):
    """Off a terminal, an error after fast work is still the only line on stderr."""
    lines: list[str] = []
    monkeypatch.setattr(c, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(c.STATE, "quiet", False)
    monkeypatch.setattr(c, "_plain_line", lines.append)
    with pytest.raises(RuntimeError):
        with c.progress_bar() as p:
            cb = c.task_callback(p, "ensembles")
            cb(0, 4)
            cb(4, 4)
            raise RuntimeError("the analysis after it failed")
    assert lines == []
    with c.progress_bar() as p:
        cb = c.task_callback(p, "ensembles")
        cb(0, 4)
        cb(4, 4)
    assert len(lines) == 1 and lines[0].startswith("ensembles: 4/4 (100%)")


def test_plain_progress_unknown_total_and_description_updates():
    h = plain(interval=10.0)
    t = h.p.add_task("distill a -> b", total=None)
    for epoch in range(1, 6):
        h.clock.t += 4
        h.p.update(t, description=f"distill a -> b: loss {1 / epoch:.3f}")
    assert h.lines == ["distill a -> b: loss 0.333, 12.0 s"]  # the 10 s rule
    h.p.close()  # the last state is printed once at the end
    assert h.lines[-1] == "distill a -> b: loss 0.200, 20.0 s"


def test_complete_tasks_fills_short_and_unknown_bars_for_both_kinds():
    from rich.progress import Progress

    for p in (Progress(disable=True), c.PlainProgress(lambda _: None)):
        a = p.add_task("analysis clusters", total=3)
        p.update(a, completed=1, total=3)
        b = p.add_task("data", total=None)
        d = p.add_task("matrix", total=1)
        p.update(d, completed=1, total=1)
        c.complete_tasks(p)
        assert all(t.finished for t in p.tasks)
        by_id = {t.id: t for t in p.tasks}
        assert by_id[a].description == "analysis clusters (skipped)"
        assert by_id[b].description == "data" and by_id[d].description == "matrix"


def test_progress_bar_off_a_terminal_is_plain_and_quiet_hides_it(monkeypatch):
    monkeypatch.setattr(c, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(c.STATE, "quiet", False)
    with c.progress_bar() as p:
        assert isinstance(p, c.PlainProgress)
    monkeypatch.setattr(c.STATE, "quiet", True)
    with c.progress_bar() as p:
        assert not isinstance(p, c.PlainProgress)  # rich's, disabled: draws nothing


# ---------------------------------------------------------------- tables


def test_tables_off_a_terminal_are_full_width_plain_ascii():
    t = Table(title="wide")
    for i in range(8):
        t.add_column(f"column_number_{i}_with_a_long_header")
    t.add_row(*[f"[red]value_{i}_that_is_long_too[/red]" for i in range(8)])
    buf = io.StringIO()
    c.print_table(t, Console(file=buf, width=80))
    out = buf.getvalue()
    assert "…" not in out and not ANSI.search(out)
    for i in range(8):
        assert f"column_number_{i}_with_a_long_header" in out and f"value_{i}_that_is_long_too" in out
    assert max(len(line) for line in out.splitlines()) > 80
    assert set(out) <= set(map(chr, range(32, 127))) | {"\n"}  # ASCII rules only


# ---------------------------------------------------------------- the study, as a CI log sees it


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for i, name in enumerate(LONG):
        save_program(TinyCNN(1, 10, seed=i), d / f"{name}.pt2")
    return d


@pytest.fixture
def two_models(model_dir, monkeypatch):
    """The two model files, named relative to the working directory (progress lines name the spec)."""
    monkeypatch.chdir(model_dir)
    return [f"{name}.pt2" for name in LONG]


def test_study_with_cli_runner_prints_progress_lines_and_full_names(two_models, tmp_path):
    r = run("study", *two_models, "--n", 30, "--steps", 2, "--no-analyses", "-o", tmp_path / "st")
    err = r.stderr
    assert not ANSI.search(err) and "…" not in err
    for name in LONG:
        m = re.search(rf"^attack +{name}\.pt2: (\d+)/(\d+)", err, re.M)  # counts the samples attacked
        assert m and m.group(1) == m.group(2) and 0 < int(m.group(1)) <= 30, err
        assert re.search(rf"^transfer +{name}\.pt2: 2/2", err, re.M), err
    assert err.rstrip().splitlines()[-1].startswith("2 attack(s) run, 0 reused")
    # rerun: everything is done before, one line each, still complete
    r = run("study", *two_models, "--n", 30, "--steps", 2, "--no-analyses", "-o", tmp_path / "st")
    assert f"attack   {LONG[0]}.pt2 (done before): 30/30" in r.stderr
    r = run("study", *two_models, "--n", 30, "--steps", 2, "--no-analyses", "-o", tmp_path / "st", "-q")
    assert "30/30" not in r.stderr and "attack(s) run" not in r.stderr  # warnings only


def test_study_final_progress_display_has_every_bar_full(two_models, tmp_path, monkeypatch):
    """Rich bars (what a terminal shows at the end) and plain tasks both end complete."""
    import contextlib

    from rich.progress import Progress

    seen = []

    @contextlib.contextmanager
    def capture():
        p = Progress(disable=True)
        seen.append(p)
        with p:
            yield p

    monkeypatch.setattr(c, "progress_bar", capture)
    run("study", *two_models, "--n", 30, "--steps", 2, "--no-analyses", "-o", tmp_path / "st")
    tasks = seen[0].tasks
    assert len(tasks) == 1 + 2 + 2 + 1  # data, attacks, transfers, matrix
    assert all(t.finished for t in tasks), [(t.description, t.completed, t.total) for t in tasks]


@pytest.mark.slow
def test_study_analysis_stage_is_one_bar_that_ends_full(tmp_path, monkeypatch):
    import contextlib

    from rich.progress import Progress

    seen = []

    @contextlib.contextmanager
    def capture():
        p = Progress(disable=True)
        seen.append(p)
        with p:
            yield p

    monkeypatch.setattr(c, "progress_bar", capture)
    run("study", "digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1", "--n", 60, "--steps", 3, "-o", tmp_path / "st")
    tasks = seen[0].tasks
    analysis = [t for t in tasks if t.description.startswith("analysis")]
    assert len(analysis) == 1, [t.description for t in tasks]
    assert all(t.finished for t in tasks), [(t.description, t.completed, t.total) for t in tasks]


@pytest.mark.slow
@pytest.mark.slow
def test_study_log_of_a_real_process_is_readable(two_models, tmp_path):
    """`satkit study ... 2> log`: no escape codes, full names, progress lines, the summary last."""
    log = tmp_path / "log"
    cmd = [sys.executable, "-m", "satkit", "study", *map(str, two_models), "--n", "30", "--steps", "2",
           "--no-analyses", "-o", str(tmp_path / "st")]
    with open(log, "w") as fh:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, timeout=300)
    text = log.read_text(encoding="utf-8")
    assert r.returncode == 0, text
    assert not ANSI.search(text) and "\r" not in text and "…" not in text
    lines = text.rstrip("\n").splitlines()
    assert re.search(r"^data +digits: 30/30$", text, re.M)
    for name in LONG:
        m = re.search(rf"^attack +{name}\.pt2: (\d+)/(\d+) \(100%\), [0-9.]+ s$", text, re.M)  # samples attacked
        assert m and m.group(1) == m.group(2) and 0 < int(m.group(1)) <= 30, text
        assert re.search(rf"^transfer +{name}\.pt2: 2/2 \(100%\), [0-9.]+ s$", text, re.M), text
        assert any(name in ln and "|" in ln for ln in lines), text  # the matrix table row, name in full
    assert lines[-1].startswith("2 attack(s) run, 0 reused; 4 transfer evaluation(s) run, 0 reused;"), text
    assert f"Matrix: {tmp_path / 'st' / 'sat.csv'}" in lines[-1]
