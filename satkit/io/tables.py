"""Tables (CSV, Parquet) through polars, with ``-`` meaning stdin/stdout."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import polars as pl

from satkit.errors import InputFileError
from satkit.io.atomic import atomic_output, write_failure
from satkit.io.cells import check_cells


def write_table(df: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write CSV (or Parquet when the name ends in .parquet); ``-`` writes CSV to stdout.

    Refuses a text cell a spreadsheet would run as a formula (see :mod:`satkit.io.cells`).
    Any failure while writing (a full disk included: polars gives no errno) is one
    :class:`OutputError` naming the path and the cause; the old file stays as it was.
    """
    check_cells("stdout" if str(path) == "-" else path, _text_cells(df))
    if str(path) == "-":
        try:
            sys.stdout.write(df.write_csv())
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise write_failure(e, "stdout") from None
        return
    p = Path(path)
    with atomic_output(p) as tmp:
        try:
            if p.suffix.lower() == ".parquet":
                df.write_parquet(tmp)
            else:
                df.write_csv(tmp)
        except Exception as e:  # only the writer runs here: whatever it raises is a failed write
            raise write_failure(e, p) from None


def _text_cells(df: pl.DataFrame):
    """(column, cells) for the header and every text column of ``df``."""
    yield None, df.columns
    for name, dtype in df.schema.items():
        if dtype == pl.String or dtype == pl.Categorical or dtype == pl.Enum:
            yield name, df.get_column(name).cast(pl.String).unique().drop_nulls().to_list()


def read_table(path: str | os.PathLike, what: str = "table") -> pl.DataFrame:
    """Read a CSV/Parquet table; ``-`` reads CSV from stdin. Errors are one line."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
            if not data.strip():
                raise InputFileError(f"stdin: empty input, expected a {what} CSV")
            return pl.read_csv(io.BytesIO(data))
        p = Path(path)
        if not p.exists():
            raise InputFileError(f"{p}: no such file")
        if p.is_dir():
            raise InputFileError(f"{p}: is a directory, expected a {what} file")
        if p.stat().st_size == 0:
            raise InputFileError(f"{p}: file is empty, expected a {what}")
        if p.suffix.lower() == ".parquet":
            return pl.read_parquet(p)
        return pl.read_csv(p)
    except InputFileError:
        raise
    except Exception as e:
        from satkit.io.sniff import describe

        known = describe(path) if str(path) != "-" else None
        if known:
            raise InputFileError(f"{path}: expected a {what} (CSV); {known}") from None
        raise InputFileError(f"{path}: cannot read {what} ({' '.join(str(e).split())[:160]})") from None
