"""Model cards: the 13 architecture components of the paper (section 4.1, appendix C).

A card is one string per component. ``~`` means "not applicable" (e.g. the
location of channel-wise attention in a model that has none). The built-in
cards are

* ``satkit/cards/paper69.csv``: the 69 ImageNet models of the paper's tables
  0.C.3 / 0.C.4, keyed by the timm 0.6.7 names the paper used. Values are
  copied verbatim from the paper (input resolution as ``"224 224"``, stem
  layers as ``"3s2/3/3"``). Notes on the transcription:

  - The text dump of table 0.C.4 dropped the empty "Location of CW attention"
    cell of every row whose CW attention is "No"; those rows are ``~`` there and
    their last value is "Group conv".
  - ``resnest50d`` has CW attention "Yes" (split attention) but no location in
    the paper; it is kept as ``~`` rather than guessed.
  - ``resnetv2_50d_evos`` has Activation "-" (EvoNorm fuses it): ``~``.
  - The paper lists ``hrnet_w64`` as "HRNet-W32" in its name table; the timm
    name (``hrnet_w64``) is what was run, so that is the key here.

* ``satkit/cards/digits_zoo.csv``: one card per built-in digits-zoo model,
  named ``digits/<model>``, its architecture's card in :mod:`satkit.models.zoo`.

A user CSV (``Model name`` + the 13 columns) adds cards or replaces built-in
ones with the same name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import polars as pl

from satkit.errors import InputFileError
from satkit.io.tables import read_table

NAME = "Model name"
NA = "~"  # "not applicable"

COMPONENTS: list[str] = [
    "Base architecture",
    "Hierarchical structure",
    "Stem layer",
    "Input resolution",
    "Normalization",
    "Activation",
    "Pooling (stem)",
    "Pooling (final)",
    "2D SA",
    "CW attention",
    "Location of CW attention",
    "DW conv",
    "Group conv",
]

PAPER_CARDS = Path(__file__).resolve().parent / "paper69.csv"
# Written from the zoo architectures' cards (tests/test_cards.py keeps the two equal),
# so card handling never imports the models.
ZOO_CARDS = Path(__file__).resolve().parent / "digits_zoo.csv"

# Paper (timm 0.6.7) name -> timm 1.0 name with the pretrained tag that holds the
# same weights. Only names that no longer resolve in timm 1.0 are listed.
ALIASES: dict[str, str] = {
    # timm 0.9 folded the gluon_* ResNets into resnet*.gluon_in1k tags
    # (timm's own deprecation table maps gluon_resnet101_v1c -> resnet101c.gluon_in1k).
    "gluon_resnet101_v1c": "resnet101c.gluon_in1k",
    # timm 0.9 renamed jx_nest_* to nest_*_jx (deprecation table); goog_in1k is
    # the only ImageNet-1k checkpoint, the JAX port the paper used.
    "jx_nest_tiny": "nest_tiny_jx.goog_in1k",
    # timm 0.9 dropped gluon_xception.py; GluonCV's Xception-65 was itself a port
    # of the TF DeepLab ImageNet checkpoint, which timm 1.0 ships as
    # xception65.tf_in1k (same Modified Aligned Xception-65, 299 px). Closest
    # surviving weights, not a byte-identical file.
    "gluon_xception65": "xception65.tf_in1k",
}


def _norm(value: object) -> str:
    """One card cell as a string; empty / missing / ``~`` all mean not applicable."""
    if value is None:
        return NA
    s = str(value).strip()
    return s if s else NA


def _frame(rows: dict[str, dict[str, str]]) -> pl.DataFrame:
    data = {NAME: list(rows)}
    for c in COMPONENTS:
        data[c] = [rows[n][c] for n in rows]
    return pl.DataFrame(data, schema={k: pl.String for k in data})


def _rows_from_frame(df: pl.DataFrame, source: str) -> dict[str, dict[str, str]]:
    """Validate a card table and turn it into ``{name: {component: value}}``."""
    missing = [c for c in [NAME, *COMPONENTS] if c not in df.columns]
    if missing:
        raise InputFileError(
            f"{source}: model cards lack column(s) {', '.join(repr(c) for c in missing)}; "
            f"a card file needs '{NAME}' plus all {len(COMPONENTS)} components"
        )
    df = df.select([pl.col(c).cast(pl.String) for c in [NAME, *COMPONENTS]])
    names = [(_norm(v) if v is not None else "") for v in df[NAME].to_list()]
    blank = [i + 2 for i, n in enumerate(names) if n in ("", NA)]  # +2: header is line 1
    if blank:
        raise InputFileError(f"{source}: empty '{NAME}' on line(s) {', '.join(map(str, blank[:5]))}; every card needs a name")
    dups = sorted(n for n, count in Counter(names).items() if count > 1)
    if dups:
        raise InputFileError(f"{source}: duplicate model name(s) {', '.join(dups[:5])}; keep one card per model")
    cols = {c: df[c].to_list() for c in COMPONENTS}
    return {n: {c: _norm(cols[c][i]) for c in COMPONENTS} for i, n in enumerate(names)}


def _paper_rows() -> dict[str, dict[str, str]]:
    return _rows_from_frame(pl.read_csv(PAPER_CARDS, infer_schema=False), str(PAPER_CARDS))


def _zoo_rows() -> dict[str, dict[str, str]]:
    return _rows_from_frame(pl.read_csv(ZOO_CARDS, infer_schema=False), str(ZOO_CARDS))


def load_cards(path: str | os.PathLike | None = None) -> pl.DataFrame:
    """All cards: built-in (paper 69 + digits zoo), then a user CSV overriding by name.

    Returns one row per model: ``Model name`` and the 13 components, all strings,
    ``~`` for not applicable.
    """
    rows = _paper_rows()
    rows.update(_zoo_rows())
    if path is not None:
        user = _rows_from_frame(read_table(path, what="model cards"), "stdin" if str(path) == "-" else str(path))
        rows.update(user)  # same name: the user's card wins; new names are appended
    return _frame(rows)


def _lookup_keys(name: str) -> list[str]:
    """Names to try for a card, most specific first.

    Exact name; without a ``timm:``/``timm/`` prefix; without a ``.tag``
    (``resnet50.a1_in1k`` -> ``resnet50``); and the paper name of a timm 1.0
    alias (``nest_tiny_jx.goog_in1k`` -> ``jx_nest_tiny``).
    """
    bare = name
    for prefix in ("timm:", "timm/"):
        bare = bare.removeprefix(prefix)
    base = bare.split(".")[0]
    reverse = {v: k for k, v in ALIASES.items()} | {v.split(".")[0]: k for k, v in ALIASES.items()}
    keys = [name, bare, base] + [reverse[k] for k in (bare, base) if k in reverse]
    return list(dict.fromkeys(keys))


def _index(cards: pl.DataFrame) -> dict[str, dict[str, str]]:
    return {r[NAME]: {c: r[c] for c in COMPONENTS} for r in cards.iter_rows(named=True)}


def card_of(name: str, cards: pl.DataFrame | None = None) -> dict[str, str] | None:
    """The card of one model as ``{component: value}``, or None when there is none."""
    index = _index(load_cards() if cards is None else cards)
    for key in _lookup_keys(name):
        if key in index:
            return dict(index[key])
    return None


def cards_for(names: list[str], cards: pl.DataFrame | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Cards of ``names`` (in that order, ``Model name`` = the name as given) and the names without one.

    A model without a card is returned in the second list so the caller can
    report it; it is never silently dropped.
    """
    index = _index(load_cards() if cards is None else cards)
    found: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    for name in names:
        key = next((k for k in _lookup_keys(name) if k in index), None)
        if key is None:
            missing.append(name)
        else:
            found[name] = index[key]
    return _frame(found), missing


def timm_name(name: str) -> str:
    """The timm 1.0 name to create ``name`` with (the alias when there is one)."""
    return ALIASES.get(name, name)
