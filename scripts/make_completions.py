"""Regenerate completions/ from the installed app: python scripts/make_completions.py

Each script is what the `satkit` command prints for that shell through typer's public
completion interface: `_SATKIT_COMPLETE=source_<shell> satkit` (the environment variable
the scripts themselves call satkit back with; `satkit --show-completion` prints the same
script for the shell it runs in). tests/test_cli.py checks the files are current.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

SHELLS = (("bash", "satkit.bash"), ("zsh", "_satkit"), ("fish", "satkit.fish"))


def satkit_command() -> str:
    """The installed `satkit` entry point: next to this Python, else on PATH."""
    here = Path(sys.executable).parent / ("satkit.exe" if os.name == "nt" else "satkit")
    found = str(here) if here.is_file() else shutil.which("satkit")
    if found is None:
        raise SystemExit("no satkit command: pip install -e . first")
    return found


def completion_script(shell: str, exe: str | None = None) -> str:
    """The completion script `satkit` prints for ``shell``, as the file holds it (one final newline)."""
    env = dict(os.environ, _SATKIT_COMPLETE=f"source_{shell}")
    out = subprocess.run([exe or satkit_command()], env=env, capture_output=True, text=True, check=True).stdout
    return out.strip("\n") + "\n"


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "completions"
    exe = satkit_command()
    for shell, name in SHELLS:
        (out / name).write_text(completion_script(shell, exe))
        print(out / name)
