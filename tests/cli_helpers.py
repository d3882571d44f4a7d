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
