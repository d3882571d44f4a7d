"""Helpers for driving the CLI in tests (typer's CliRunner; stderr is captured apart from stdout)."""

from typer.testing import CliRunner

from satkit.cli.app import app

runner = CliRunner()


def run(*args, ok=True, input=None):
    r = runner.invoke(app, [str(a) for a in args], input=input)
    if ok:
        assert r.exit_code == 0, f"exit {r.exit_code}\nstdout: {r.stdout}\nstderr: {r.stderr}\n{r.exception!r}"
    return r


def assert_clean_error(r, *words):
    """Exit code 2, exactly one line on stderr starting with 'satkit: error:', no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("satkit: error:"), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in r.stderr + r.stdout
    for w in words:
        assert w in err, (w, err)


SENTINEL = b"previous content\n"


def run_bad_case(case, workspace, tmp_path, outputs_if=None):
    """Run one bad-input case ``(id, argv template, words)`` through the CLI and assert the error contract.

    ``{d}`` in the template is the workspace, ``{out}`` a path under ``tmp_path``.
    Every output (an argument under ``{out}``, or those ``outputs_if`` selects) is
    created first with known bytes and must survive untouched; the command must
    exit 2 with one ``satkit: error:`` line holding every word, no traceback, and
    leave no ``.partial`` file. Returns (argv, result) for extra checks.
    """
    cid, args, words = case
    out = tmp_path / "out"
    argv = [a.format(d=workspace, out=out) for a in args]
    keep = outputs_if or (lambda p: p.startswith(str(out)))
    outputs = [p for p in argv if keep(p)]
    for p in outputs:
        with open(p, "wb") as fh:
            fh.write(SENTINEL)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (cid, r.exit_code, r.stdout, r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("satkit: error:") and len(err.splitlines()) == 1, (cid, err)
    assert "Traceback" not in r.stdout + r.stderr
    for w in words:
        assert w in err, (cid, w, err)
    for p in outputs:
        with open(p, "rb") as fh:
            assert fh.read() == SENTINEL, f"{cid}: output overwritten"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    return argv, r
