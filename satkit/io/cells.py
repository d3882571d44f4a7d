"""Text cells a spreadsheet would run as a formula (CSV injection), and the one rule against them.

A spreadsheet opening a CSV treats a cell that begins with ``=``, ``+``, ``-`` or
``@`` (or a tab or carriage return before one) as a formula. Model names become
cells (sat.csv, models.csv, transfer tables), and a model file's stem is
whatever its author chose: ``=1+1.pt2`` would put a formula into every table.

The rule: **a model name may not begin with one of those characters.** It is
refused where names are made (:func:`check_model_name`, called by
``satkit.models.model_display_name``), before any work, and the table writers
refuse any text cell that breaks it (:func:`check_cells`), so a name arriving
from a file satkit did not write is stopped too. Cells are never rewritten
(e.g. with OWASP's leading ``'``): a name must read back exactly as written
(``matrix`` reads transfer tables, ``approx --study`` reads sat.csv, polars and
pandas users read them all), and a prefixed name would not. A cell that is a
number (``-1.5``, ``+3``, ``-inf``) is data, not a formula, and stays allowed.
"""

from __future__ import annotations

from typing import Iterable, Optional

from satkit.errors import ModelError, OutputError

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SHOWN = "= + - @, tab or carriage return"


def _is_number(s: str) -> bool:
    if s != s.strip():
        return False
    try:
        float(s)
    except ValueError:
        return False
    return True


def formula_like(s: object) -> bool:
    """True when ``s`` is text a spreadsheet would read as a formula (a number is not)."""
    return isinstance(s, str) and s.startswith(FORMULA_START) and not _is_number(s)


def _show(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def check_model_name(name: str, from_option: bool = False) -> str:
    """``name`` unchanged, or :class:`ModelError` when a spreadsheet would read it as a formula.

    ``from_option``: the name was given with ``--name`` (else it is a file stem or a spec).
    """
    if formula_like(name):
        todo = ("choose another --name" if from_option
                else "rename the model file (attack, logits and approx also take --name)")
        raise ModelError(
            f"model name {_show(name)} begins with {name[0]!r}, which spreadsheets run as a formula in CSV tables; "
            f"{todo}; names may not begin with {_SHOWN}"
        )
    return name


def first_formula(cells: Iterable[object]) -> Optional[str]:
    """The first cell of ``cells`` that :func:`formula_like` flags, or None."""
    return next((c for c in cells if formula_like(c)), None)


def check_cells(path: object, columns: Iterable[tuple[Optional[str], Iterable[object]]]) -> None:
    """Refuse (one-line :class:`OutputError`) to write ``path`` when a text cell would be a formula.

    ``columns`` is ``(column name, cells)`` pairs, the column name None for the header.
    Called by the table writers before anything is written, so the old file stays as it was.
    """
    for col, cells in columns:
        bad = first_formula(cells)
        if bad is not None:
            where = "the header" if col is None else f"column {_show(str(col))}"
            raise OutputError(
                f"not writing {path}: cell {_show(bad)} in {where} begins with {bad[0]!r}, "
                f"which spreadsheets run as a formula; rename that model (names may not begin with {_SHOWN})"
            )
