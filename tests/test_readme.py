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
