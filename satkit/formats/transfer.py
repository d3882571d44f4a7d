"""The transfer table (``satkit transfer`` -> CSV/parquet): its columns, and the row one attack file gives.

One row per (source attack file, target model). The counts' meaning is in
:mod:`satkit.transfer`; the checks of a table read back are
:func:`satkit.matrix.sat.check_transfer_table` and ``check_per_sample_table``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:  # the header module imports torch; a table-only command (matrix) reads the columns only
    from satkit.formats.attack import AttackHeader

TRANSFER_SCHEMA = {
    "source": pl.Utf8, "target": pl.Utf8, "n": pl.Int64, "n_source_correct": pl.Int64, "n_target_correct": pl.Int64,
    "n_both": pl.Int64, "n_fooled": pl.Int64, "fingerprint": pl.Utf8, "attack_key": pl.Utf8,
    "target_weights_id": pl.Utf8, "eps": pl.Float64, "steps": pl.Int64, "attack": pl.Utf8, "n_same_class": pl.Int64,
}
# columns added after the first release: tables written before them are still read (the column is empty)
ADDED_COLUMNS = ("n_same_class",)
# what a table must have for a matrix: the rest is checked when present
REQUIRED = ["source", "target", "n_both", "n_fooled"]
# a per-sample table (``--per-sample``): one row per (source, target, sample id)
PER_SAMPLE_COLUMNS = ("source", "target", "id", "source_correct", "target_correct", "fooled")


def source_columns(h: AttackHeader) -> dict[str, Any]:
    """The columns of a row that come from the attack file (the source side)."""
    a = h.attack
    return {
        "source": h.model.name,
        "fingerprint": h.data.fingerprint,
        "attack_key": h.attack_key if h.attack_key is not None else "",
        "eps": float(a.eps if a.eps is not None else float("nan")),
        "steps": int(a.steps if a.steps is not None else 0),
        "attack": str(a.attack if a.attack is not None else ""),
    }
