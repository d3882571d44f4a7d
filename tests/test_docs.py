"""Generated docs stay generated: docs/errors.md is exactly what the tests' case lists give."""

from pathlib import Path

import pytest

from tests.errors_doc import render


def test_errors_md_is_generated_from_the_case_lists():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/errors.md is stale: python -m tests.errors_doc > docs/errors.md"


def _section(doc: str, heading: str) -> str:
    start = doc.index(heading)
    end = doc.find("\n## ", start + len(heading))
    return doc[start:end if end >= 0 else None]


@pytest.mark.slow
def test_formats_md_export_example_runs_as_written(tmp_path, monkeypatch):
    """docs/formats.md: a custom nn.Module -> torch.export -> .pt2 -> attack, approx, study (no opt-in)."""
    import re
    import shlex

    from cli_helpers import run

    doc = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")
    section = _section(doc, "### Your own `nn.Module`: export it to a `.pt2`")
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (shell,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "formats.md", "exec"), {"__name__": "formats_md_example"})
    assert (tmp_path / "mynet.pt2").is_file()
    lines = [line for line in shell.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == ["attack", "approx", "study"]
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "satkit"
        run(*argv[1:])
    assert (tmp_path / "mynet.safetensors").is_file() and (tmp_path / "placement.csv").is_file()
    assert (tmp_path / "mystudy" / "sat.csv").is_file()
