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
def test_guide_own_model_section_runs_as_written(tmp_path, monkeypatch):
    """docs/guide.md "Your own model": train, torch.export -> .pt2, then --plan, attack, approx --study, study."""
    import re
    import shlex

    import polars as pl

    from cli_helpers import run

    doc = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text(encoding="utf-8")
    start = doc.index("### Your own model")
    section = doc[start:doc.index("\n## ", start)]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (shell,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "guide.md", "exec"), {"__name__": "guide_md_example"})
    assert (tmp_path / "mynet.pt2").is_file()
    lines = [line for line in shell.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == ["study", "attack", "study", "approx", "study"]
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "satkit"
        run(*argv[1:])
    # the trained model is a real classifier: most held-out digits right
    from satkit.formats import read_satkit_file

    attack = read_satkit_file(tmp_path / "mynet.safetensors", "satkit.attack")
    assert float(attack.get("source_correct").float().mean()) > 0.8
    placed = pl.read_csv(tmp_path / "placement.csv")
    assert placed.height == 3
    assert (tmp_path / "mystudy" / "sat.csv").is_file() and (tmp_path / "mystudy" / "report.html").is_file()
