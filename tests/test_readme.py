"""The README's library example runs as written (in a scratch directory)."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README has no python example"
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    assert "digits/resnet-s1" in out and "digits/vit-s1" in out  # the printed SAT matrix names both models
    assert len(list((tmp_path / "adv").glob("*.safetensors"))) == 2


ROOT = README.parent


def test_ci_runs_exactly_the_readme_test_commands():
    """.ci/run's commands (after its cd) are the README's install-and-test block, line for line."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    readme = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert ci and any(readme[i : i + len(ci)] == ci for i in range(len(readme))), "README and .ci/run differ"
    assert any("-c constraints.txt" in line and ".[test,ray]" in line for line in ci)


def test_requirements_are_lower_bounds_and_pins_are_constraints():
    """The package never caps torch (a user's newer torch stays); constraints.txt pins the build machine's."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert not [r for r in reqs if re.search(r"<|==|~=|!=", r)], "upper bounds or pins belong in constraints.txt"
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in project["dependencies"]}
    # what satkit imports itself is declared, not left to arrive through other packages
    assert {"torch", "typer", "pillow", "threadpoolctl", "huggingface-hub", "scipy", "numpy"} <= names
    assert "click" not in names and "ray" not in project["optional-dependencies"]["test"]
    assert "bench" not in project["optional-dependencies"]  # torchattacks: pip install --no-deps (docs/performance.md)
    pins = [line for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    assert {p.split("==")[0] for p in pins} >= {"torch", "torchvision"} and all("==" in p for p in pins)


def test_satkit_imports_no_standalone_click():
    """typer bundles its own click; satkit's code uses typer's API (click may be absent from a venv)."""
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "satkit").rglob("*.py")
            if re.search(r"^\s*(import click|from click)\b", p.read_text(encoding="utf-8"), re.M)]
    assert hits == []
