"""Regenerate completions/ from the app: python scripts/make_completions.py"""

from pathlib import Path

from typer._completion_shared import get_completion_script

out = Path(__file__).resolve().parent.parent / "completions"
for shell, name in (("bash", "satkit.bash"), ("zsh", "_satkit"), ("fish", "satkit.fish")):
    (out / name).write_text(get_completion_script(prog_name="satkit", complete_var="_SATKIT_COMPLETE", shell=shell))
    print(out / name)
