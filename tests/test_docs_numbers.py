"""The docs' numbers equal their recorded runs (docs/runs/), rendered by scripts/docs_numbers.py.

Fast tier: nothing is re-run, the regions are rendered from the records. Re-making
the records from real runs is scripts/record_runs.py (benchmark tier).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("docs_numbers", ROOT / "scripts" / "docs_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


dn = _load()
MARKED = [p for p in dn.DOCS if dn.regions(p.read_text())]


@pytest.mark.parametrize("path", MARKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_regions_equal_their_records(path):
    text = path.read_text()
    assert text == dn.render(text, path), (
        f"{path.relative_to(ROOT)} differs from docs/runs: python scripts/docs_numbers.py --check shows how; "
        "--write rewrites it (then re-read the prose next to every changed number)")


def test_every_generator_is_used_once_and_every_marker_is_closed():
    used = [n for p in dn.DOCS for n in dn.regions(p.read_text())]
    assert sorted(used) == sorted(dn.GENERATORS), "a generator without a region, or a region twice"
    for p in dn.DOCS:
        text = p.read_text()
        opened = len(re.findall(r"<!-- generated: ", text))
        assert opened == len(dn.regions(text)), f"{p.name}: a generated marker without its end (or a malformed one)"
        assert text.count("<!-- end generated -->") == opened, p.name


def test_every_record_names_its_command_and_versions():
    runs = sorted(d for d in dn.RUNS.iterdir() if d.is_dir())
    assert runs
    for d in runs:
        meta = json.loads((d / "run.json").read_text())
        assert meta["commands"] and all(isinstance(c, str) and c for c in meta["commands"]), d.name
        assert {"satkit", "torch"} <= set(meta["versions"]), d.name
        for f in meta["files"]:
            assert (d / f).is_file(), f"{d.name}/{f} listed in run.json but missing"
        kept = {p.name for p in d.iterdir()} - {"run.json"}
        assert kept == set(meta["files"]), f"{d.name}: files not listed in run.json: {kept - set(meta['files'])}"
        assert all((d / f).stat().st_size < 200_000 for f in kept), f"{d.name}: records hold small tables only"
        if meta.get("recorded") == "transcribed":
            assert "not" in meta["note"], d.name  # says it was not re-run


def test_the_recorded_default_study_has_todays_defaults():
    """A changed default (eps, steps, clustering, models, ...) fails here until the runs are re-recorded."""
    from satkit.study import StudyConfig
    from satkit.study.layout import StudySettings

    recorded = json.loads((dn.RUNS / "study-default" / "study.json").read_text())
    today = json.loads(StudySettings.of(StudyConfig.create(None, ROOT / "not-created"), recorded["fingerprint"]).to_json())
    changed = {k: (recorded.get(k), today.get(k)) for k in set(recorded) | set(today) if recorded.get(k) != today.get(k)}
    assert not changed, (f"satkit study's defaults moved since docs/runs/study-default was recorded: {changed}; "
                         "re-record (python scripts/record_runs.py), --write the docs and re-read their prose")
