"""Square similarity-matrix CSV: read with checks, write atomically.

Layout (what ``satkit matrix`` writes and ``cluster`` / ``importance`` read)::

    model,resnet50,vit_small_patch16_224
    resnet50,4.31,2.05
    vit_small_patch16_224,2.05,4.27

The first column holds the row names (its header may be anything, also empty),
the header row holds the column names in the same order. Cells are numbers;
an empty cell is NaN, which the reader rejects (every pair must be measured)
and the writer produces for missing values. Symmetry is not required: one-sided
matrices (appendix G.1 approximation) are legitimate.

The reader accepts any finite number, since not every similarity matrix is
SAT; the SAT analyses check the SAT range themselves
(:func:`satkit.matrix.sat.check_sat_matrix`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from satkit.errors import InputFileError, ParameterError
from satkit.io.atomic import atomic_output, write_failure
from satkit.io.cells import check_cells

_SHOW = 5  # how many offending names / cells an error message lists


def _read_text(path: str | os.PathLike) -> tuple[str, str]:
    """File (or stdin for ``-``) as text, plus the name to use in messages."""
    if str(path) == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        where = "stdin"
    else:
        p = Path(path)
        where = str(p)
        if not p.exists():
            raise InputFileError(f"{p}: no such file")
        if p.is_dir():
            raise InputFileError(f"{p}: is a directory, expected a similarity-matrix CSV")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputFileError(f"{p}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM spreadsheets add
    except UnicodeDecodeError:
        from satkit.io.sniff import describe

        known = describe(path) if str(path) != "-" else None
        raise InputFileError(f"{where}: not UTF-8 text, expected a similarity-matrix CSV" + (f"; {known}" if known else "")) from None
    if not text.strip():
        raise InputFileError(f"{where}: empty input, expected a similarity-matrix CSV")
    return text, where


def _parse_rows(text: str, where: str) -> list[list[str]]:
    try:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text))]
    except csv.Error as e:
        raise InputFileError(f"{where}: not a valid CSV ({e})") from None
    rows = [r for r in rows if any(r)]  # blank lines carry nothing
    if len(rows) < 2:
        raise InputFileError(f"{where}: need a header row and at least one model row, got {len(rows)} row(s)")
    return rows


def _check_names(col_names: list[str], row_names: list[str], where: str) -> None:
    n_cols, n_rows = len(col_names), len(row_names)
    if n_cols != n_rows:
        raise InputFileError(
            f"{where}: not square ({n_rows} rows x {n_cols} columns); the matrix needs one row and one column per model"
        )
    empty = [i + 1 for i, n in enumerate(col_names) if not n] + [i + 2 for i, n in enumerate(row_names) if not n]
    if empty:
        raise InputFileError(f"{where}: empty model name(s) in the header or first column; name every row and column")
    dups = [n for n, c in Counter(col_names).items() if c > 1] + [n for n, c in Counter(row_names).items() if c > 1]
    if dups:
        dups = list(dict.fromkeys(dups))
        raise InputFileError(f"{where}: duplicate model name(s) {', '.join(map(repr, dups[:_SHOW]))}; each model must appear once")
    diff = [(i, r, c) for i, (r, c) in enumerate(zip(row_names, col_names)) if r != c]
    if diff:
        shown = "; ".join(f"position {i + 1}: row {r!r} vs column {c!r}" for i, r, c in diff[:_SHOW])
        raise InputFileError(
            f"{where}: row names differ from column names ({len(diff)} position(s): {shown}); "
            "list the same models in the same order in the first column and the header"
        )


def _parse_cells(rows: list[list[str]], names: list[str], where: str, allow_empty: bool = False) -> np.ndarray:
    n = len(names)
    M = np.full((n, n), np.nan)
    bad: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        if len(row) != n + 1:
            raise InputFileError(f"{where}: line {i + 2} has {len(row)} cells, expected {n + 1} (name + {n} values)")
        for j, cell in enumerate(row[1:]):
            try:
                M[i, j] = float(cell) if cell else math.nan
            except ValueError:
                raise InputFileError(
                    f"{where}: cell ({names[i]!r}, {names[j]!r}) is {cell[:30]!r}, not a number"
                ) from None
            if not math.isfinite(M[i, j]) and not (allow_empty and not cell):
                bad.append((names[i], names[j]))
    if bad:
        shown = ", ".join(f"({r}, {c})" for r, c in bad[:_SHOW])
        raise InputFileError(
            f"{where}: {len(bad)} empty/NaN/infinite cell(s), e.g. {shown}; every pair needs a finite similarity"
        )
    return M


def read_similarity_matrix(path: str | os.PathLike, allow_empty: bool = False) -> tuple[list[str], np.ndarray]:
    """Read a square similarity CSV (``-`` = stdin) -> (names, n x n float64 matrix).

    Checks: square, row names == column names in the same order, no duplicate or
    empty names, every cell a finite number. Symmetry is not checked.
    ``allow_empty``: an empty cell is NaN (a pair a study could not measure: |X_AB| empty),
    as the study report shows it; a NaN or infinite number is still refused.
    """
    text, where = _read_text(path)
    rows = _parse_rows(text, where)
    col_names, body = rows[0][1:], rows[1:]
    row_names = [r[0] if r else "" for r in body]
    _check_names(col_names, row_names, where)
    return list(col_names), _parse_cells(body, col_names, where, allow_empty)


def _format(v: float) -> str:
    # repr of a Python float is the shortest string that round-trips exactly
    return "" if not math.isfinite(v) else repr(float(v))


def _matrix_csv(names: list[str], M: np.ndarray, corner: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([corner, *names])
    for name, row in zip(names, M):
        w.writerow([name, *(_format(v) for v in row)])
    return buf.getvalue()


def write_similarity_matrix(path: str | os.PathLike, names: list[str], M: np.ndarray, corner: str = "model") -> None:
    """Write ``M`` in the layout above (``-`` = stdout); NaN/inf become empty cells."""
    M = np.asarray(M, dtype=float)
    names = [str(n) for n in names]
    if M.ndim != 2 or M.shape != (len(names), len(names)):
        raise ParameterError(f"matrix shape {M.shape} does not match {len(names)} names; need a square n x n matrix")
    dups = [n for n, c in Counter(names).items() if c > 1]
    if dups:
        raise ParameterError(f"duplicate model name(s) {', '.join(map(repr, dups[:_SHOW]))}; each model must appear once")
    check_cells("stdout" if str(path) == "-" else path, [(None, [corner, *names])])
    text = _matrix_csv(names, M, corner)
    if str(path) == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise write_failure(e, "stdout") from None
        return
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
