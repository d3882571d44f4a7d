"""Generated docs stay generated: docs/errors.md is exactly what the tests' case lists give."""

from pathlib import Path

from tests.errors_doc import render


def test_errors_md_is_generated_from_the_case_lists():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/errors.md is stale: python -m tests.errors_doc > docs/errors.md"
