"""Model cards: the shipped paper table, user overrides, lookups, timm names."""

from __future__ import annotations

import polars as pl
import pytest

import satkit.cards as cards_mod
from satkit.cards import (
    ALIASES,
    COMPONENTS,
    NAME,
    card_of,
    cards_for,
    load_cards,
    timm_name,
)
from satkit.errors import InputFileError, SatkitError


def unresolved_timm_names(names: list[str], require_pretrained: bool = False) -> list[str]:
    """Names that timm (installed version, no network) cannot resolve, even via :data:`ALIASES`.

    A name resolves when it (or its alias) is a current timm model name; a
    ``name.tag`` form must also be a known pretrained tag. Deprecated timm names
    count as unresolved (they warn and may disappear), hence the aliases. With
    ``require_pretrained`` the model must also have pretrained weights.
    """
    import timm  # lazy: heavy import, only needed for this check

    archs = set(timm.list_models())
    tagged = set(timm.list_models(pretrained=True))
    with_weights = {t.split(".")[0] for t in tagged}
    bad = []
    for name in names:
        target = timm_name(name)
        arch, _, tag = target.partition(".")
        ok = arch in archs and (target in tagged if tag else True)
        if ok and require_pretrained and not tag:
            ok = arch in with_weights
        if not ok:
            bad.append(name)
    return bad

def paper_cards() -> pl.DataFrame:
    return pl.read_csv(cards_mod.PAPER_CARDS, infer_schema=False)


def row(df: pl.DataFrame, name: str) -> dict[str, str]:
    r = df.filter(pl.col(NAME) == name).row(0, named=True)
    return {c: r[c] for c in COMPONENTS}


def write_csv(path, rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    columns = columns or [NAME, *COMPONENTS]
    pl.DataFrame({c: [r.get(c, "") for r in rows] for c in columns}, schema={c: pl.String for c in columns}).write_csv(path)
    return str(path)


# ----------------------------------------------------------------------------- shipped table


def test_paper_table_has_69_models_and_13_components():
    df = paper_cards()
    assert df.columns == [NAME, *COMPONENTS]
    assert len(COMPONENTS) == 13
    assert df.height == 69
    assert df[NAME].n_unique() == 69
    assert df.null_count().sum_horizontal().item() == 0
    for c in COMPONENTS:
        assert all(v.strip() == v and v for v in df[c].to_list()), c


def test_paper_table_rows_checked_by_hand():
    df = paper_cards()
    # CW attention "No": the text dump dropped the Location cell; last value is Group conv
    assert row(df, "botnet26t_256") | {NAME: "botnet26t_256"} == {
        NAME: "botnet26t_256", "Base architecture": "CNN", "Hierarchical structure": "Yes", "Stem layer": "3s2/3/3",
        "Input resolution": "256 256", "Normalization": "BN", "Activation": "ReLU", "Pooling (stem)": "Yes",
        "Pooling (final)": "GAP", "2D SA": "Yes (BoT)", "CW attention": "No", "Location of CW attention": "~",
        "DW conv": "No", "Group conv": "No",
    }
    r = row(df, "cspresnext50")
    assert (r["Location of CW attention"], r["DW conv"], r["Group conv"]) == ("~", "No", "Yes")
    r = row(df, "convmixer_1536_20")
    assert (r["DW conv"], r["Group conv"]) == ("Yes", "No")
    # CW attention "Yes (...)": all 7 values present
    r = row(df, "eca_botnext26ts_256")
    assert (r["CW attention"], r["Location of CW attention"], r["DW conv"], r["Group conv"]) == ("Yes (ECA)", "Middle", "No", "Yes")
    r = row(df, "seresnet50")
    assert (r["Location of CW attention"], r["Group conv"]) == ("End", "No")
    # ResNeSt: CW attention "Yes" without a location in the paper
    r = row(df, "resnest50d")
    assert (r["CW attention"], r["Location of CW attention"], r["DW conv"], r["Group conv"]) == ("Yes", "~", "No", "Yes")
    assert row(df, "resnetv2_50d_evos")["Activation"] == "~"
    assert row(df, "halo2botnet50ts_256")["2D SA"] == "Yes (Halo, BoT)"
    assert row(df, "lamhalobotnet50ts_256")["2D SA"] == "Yes (Lambda, Halo, BoT)"
    assert row(df, "gluon_xception65")["Input resolution"] == "299 299"
    r = row(df, "xcit_tiny_12_p8_224")  # last row of the table
    assert (r["Base architecture"], r["Stem layer"], r["DW conv"], r["Group conv"]) == ("Hybrid", "3s2/3s2/3s2", "Yes", "No")
    assert row(df, "swin_s3_tiny_224")["Base architecture"] == "NAS (TFM)"


def test_location_applies_exactly_when_cw_attention_is_named():
    for r in paper_cards().iter_rows(named=True):
        named = r["CW attention"].startswith("Yes (")
        assert (r["Location of CW attention"] != "~") == named, r[NAME]


def test_every_paper_name_resolves_in_timm_with_weights():
    names = paper_cards()[NAME].to_list()
    assert unresolved_timm_names(names, require_pretrained=True) == []


def test_aliases_are_needed_and_resolve():
    import timm

    names = set(paper_cards()[NAME].to_list())
    current = set(timm.list_models())
    for paper, new in ALIASES.items():
        assert paper in names
        assert paper not in current  # otherwise the alias would be pointless
        assert new in set(timm.list_models(pretrained=True))
        assert timm_name(paper) == new
    # without the aliases exactly those names would fail
    assert sorted(n for n in names if n not in current) == sorted(ALIASES)
    assert unresolved_timm_names(["no_such_model_xyz", "resnet50.no_such_tag", "resnet50"]) == [
        "no_such_model_xyz",
        "resnet50.no_such_tag",
    ]


# ----------------------------------------------------------------------------- load / override


def test_builtin_cards_include_paper_models():
    df = load_cards()
    assert df.columns == [NAME, *COMPONENTS]
    assert set(paper_cards()[NAME].to_list()) <= set(df[NAME].to_list())
    assert df[NAME].n_unique() == df.height


def test_shipped_zoo_cards_equal_the_zoo_architectures():
    """satkit/cards/digits_zoo.csv is the zoo's cards written out: every model, every component, same values."""
    from satkit.models import zoo

    df = load_cards()
    assert df.height == 69 + len(zoo.ZOO_MODELS)
    for model, spec in zoo.ZOO_MODELS.items():
        want = {c: zoo.ZOO_ARCHS[spec.arch].card.get(c, "~") for c in COMPONENTS}
        assert row(df, f"digits/{model}") == want, model


def test_user_csv_overrides_and_normalizes(tmp_path):
    user = {NAME: "resnet50", **{c: "u" for c in COMPONENTS}}
    user["2D SA"] = ""  # empty = not applicable
    new = {NAME: "mynet", **{c: "v" for c in COMPONENTS}}
    new["DW conv"] = " ~ "
    path = write_csv(tmp_path / "cards.csv", [user, new])
    df = load_cards(path)
    assert df.height == load_cards().height + 1  # resnet50 replaced, mynet added
    assert row(df, "resnet50")["Base architecture"] == "u"
    assert row(df, "resnet50")["2D SA"] == "~"
    assert row(df, "mynet")["DW conv"] == "~"
    assert row(df, "resnet101")["Base architecture"] == "CNN"  # untouched built-in


def test_user_csv_missing_columns(tmp_path):
    path = write_csv(tmp_path / "cards.csv", [{NAME: "a"}], [NAME, *COMPONENTS[:11]])
    with pytest.raises(InputFileError) as e:
        load_cards(path)
    msg = str(e.value)
    assert "'DW conv'" in msg and "'Group conv'" in msg and "\n" not in msg


def test_user_csv_duplicate_names(tmp_path):
    card = {NAME: "a", **{c: "v" for c in COMPONENTS}}
    path = write_csv(tmp_path / "cards.csv", [card, card])
    with pytest.raises(SatkitError, match="duplicate model name.*a"):
        load_cards(path)


def test_user_csv_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load_cards(tmp_path / "nope.csv")


# ----------------------------------------------------------------------------- lookups


def test_cards_for_reports_missing_models():
    found, missing = cards_for(["resnet50", "unknown_net", "vit_small_patch16_224"])
    assert found[NAME].to_list() == ["resnet50", "vit_small_patch16_224"]
    assert missing == ["unknown_net"]


def test_card_lookup_by_timm_1_0_name_and_tag():
    assert card_of("nest_tiny_jx.goog_in1k")["Stem layer"] == "4s4"  # alias of jx_nest_tiny
    assert card_of("resnet101c.gluon_in1k")["Stem layer"] == "3s2/3/3"  # alias of gluon_resnet101_v1c
    assert card_of("resnet50.a1_in1k")["Stem layer"] == "7s2"  # tag stripped
    assert card_of("timm:resnet50")["Stem layer"] == "7s2"
    assert card_of("definitely_not_a_model") is None
    found, missing = cards_for(["nest_tiny_jx.goog_in1k"])
    assert found[NAME].to_list() == ["nest_tiny_jx.goog_in1k"] and missing == []
