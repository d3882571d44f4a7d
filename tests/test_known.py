"""``satkit approx --known paper69``: the paper's 69 models as a known set (no network, no real weights).

Name resolution against the installed timm registry, the Table 1 cluster ids against the paper's own text,
the released SAT matrix's format, ``--plan``, and an end-to-end run with three stand-in models in a fake
local Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from satkit.errors import InputFileError, ParameterError
from satkit.study import known as K

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "seeds" / "000_ed96a7fd3e5be858.txt"
FOOTNOTE = re.compile(r"222Customized models by \[114\]:.*?EvoNorms \[66\]\.")


def paper_text() -> str:
    if not PAPER.is_file():
        pytest.skip(f"the paper's text ({PAPER}) is not beside this clone")
    return PAPER.read_text(encoding="utf-8")


def parse_table1(text: str) -> dict[int, set[str]]:
    """Table 1 of the paper's text dump: cluster id -> the model names printed in its Architecture column.

    A model name is whatever stands before a citation ``[n]`` (or before the dump's footnote "222Customized
    models by [114]: ...", which follows the customized models) between commas and cell bars."""
    lines = text.splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("No. | Top-5 Keywords | Architecture"))
    out: dict[int, set[str]] = {}
    cluster = None
    for line in lines[start + 1:]:
        if not line.strip():
            break
        m = re.match(r"^(\d+) \|", line)
        if m:
            cluster = int(m.group(1))
        line = FOOTNOTE.sub(" [fn]", line)
        names = [n.strip() for n in re.findall(r"([^,|\[\]]+?)\s*\[(?:\d+|fn)\]", line)]
        out.setdefault(cluster, set()).update(names)  # type: ignore[arg-type]
    return out


def parse_name_table(text: str) -> dict[str, str]:
    """Tab. 0.C.1: timm (0.6.7) name -> the name in the paper."""
    lines = text.splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("in timm | in paper | in timm | in paper"))
    out = {}
    for line in lines[start + 2:]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or line.startswith("Components"):
            break
        for timm_name, paper_name in zip(cells[0:6:2], cells[1:6:2]):
            out[timm_name] = paper_name
    return out


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\(patch size \d+\)", "", name.lower()))


# Table 1 and Tab. 0.C.1 print these models under different names (the paper's own inconsistencies).
NAME_DIFFERS = {
    "eca_halonext26ts": ("ECAHaloNeXt-50", "ECA-HaloNeXt-26"),
    "eca_resnet33ts": ("ECA-Net-33", "ECA-ResNet-33"),
    "resnetv2_50d_evos": ("ResNet-V2-50-D-EVOS", "ResNet-V2-50-EVOS"),
    "haloregnetz_b": ("HaloRegNetZ-B", "HaloRegNetZ"),
}


# ----------------------------------------------------------------------------- Table 1 ids


def test_table1_ids_are_the_papers_table():
    text = paper_text()
    parsed = parse_table1(text)
    assert sorted(parsed) == list(range(1, 11))
    assert sum(len(v) for v in parsed.values()) == 69
    clusters, printed = K.table1_clusters(), K.table1_names()
    shipped: dict[int, set[str]] = {}
    for card, c in clusters.items():
        shipped.setdefault(c, set()).add(printed[card])
    assert shipped == parsed
    # each Table 1 name is the card's model: the paper's name table (Tab. 0.C.1) gives the same name
    names = parse_name_table(text)
    assert set(names) == set(clusters) == set(K.card_names())
    for card, t1 in printed.items():
        if card in NAME_DIFFERS:
            assert (t1, names[card]) == NAME_DIFFERS[card]
        else:
            assert _norm(t1) == _norm(names[card]), (card, t1, names[card])


def test_table1_file_says_where_it_comes_from_and_covers_the_cards():
    head = K.TABLE1.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith("#") and "Table 1" in head
    clusters = K.table1_clusters()
    assert len(clusters) == 69
    assert set(clusters) == set(K.card_names())
    assert sorted(set(clusters.values())) == list(range(1, 11))
    assert clusters["gluon_resnet101_v1c"] == 9 and clusters["resnet50"] == 6 and clusters["deit_small_patch16_224"] == 1


# ----------------------------------------------------------------------------- resolution


def test_every_card_name_resolves_or_is_missing_with_a_reason():
    import timm
    from timm.models import get_deprecated_models

    rs = K.resolve_known()
    assert [r.card for r in rs] == K.card_names() and len(rs) == 69
    for r in rs:
        assert r.how in (K.CURRENT, K.DEPRECATED, K.ALIAS, K.MISSING)
        if r.ok:
            arch = r.timm.split(".")[0]
            assert timm.is_model(arch) and arch not in get_deprecated_models(), r
            assert timm.models.get_pretrained_cfg(r.timm).has_weights, r
        else:
            assert r.why, r
        assert r.cluster is not None
    by = {r.card: r for r in rs}
    assert (by["gluon_resnet101_v1c"].timm, by["gluon_resnet101_v1c"].how) == ("resnet101c.gluon_in1k", K.DEPRECATED)
    assert by["resnet50"].how == K.CURRENT and by["resnet50"].timm == "resnet50"
    # timm removed gluon_xception65 without a replacement: satkit's alias, said to be other weights
    x = by["gluon_xception65"]
    assert x.how == K.ALIAS and x.timm == "xception65.tf_in1k" and "not the paper's" in x.why
    # the current names need no alias: only names timm does not map itself
    assert [r.card for r in rs if r.how == K.ALIAS] == ["gluon_xception65"]


def test_a_name_that_resolves_nowhere_is_missing_with_the_reason():
    r = K.resolve_card("no_such_model_xyz", aliases={})
    assert not r.ok and r.how == K.MISSING and "no satkit alias" in r.why
    r = K.resolve_card("gluon_xception65", aliases={})
    assert not r.ok and "not a model" in r.why
    r = K.resolve_card("gluon_xception65", aliases={"gluon_xception65": "xception65.no_such_tag"})
    assert not r.ok and "no_such_tag" in r.why
    r = K.resolve_card("resnet50.no_such_tag", aliases={})
    assert not r.ok and "no weights tag" in r.why
    with pytest.raises(ParameterError, match="not in the known set"):
        K.resolve_known(only=["resnet50", "my_net"])
    with pytest.raises(ParameterError, match="unknown known set"):
        K.card_names("paper70")


# ----------------------------------------------------------------------------- the released matrix


def write_release(path: Path, names: list[str], S: np.ndarray) -> Path:
    """The layout of SAT_release.csv in github:J-H-Hwang/SAT: empty corner cell, names as header and first column."""
    lines = ["," + ",".join(names)] + [n + "," + ",".join(f"{v:.9f}" for v in row) for n, row in zip(names, S)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_released_matrix_format_is_read_as_published(tmp_path):
    names = ["nfnet_l0", "regnety_032", "gluon_xception65", "jx_nest_tiny"]
    S = np.array([[4.604681666, 2.819280326, 2.6, 2.47], [2.819280326, 4.602005241, 2.5, 2.26],
                  [2.6, 2.5, 4.6, 2.4], [2.47, 2.26, 2.4, 4.59]])
    got_names, got = K.read_release_matrix(write_release(tmp_path / "SAT_release.csv", names, S))
    assert got_names == names and np.array_equal(got, S)
    bad = write_release(tmp_path / "bad.csv", ["nfnet_l0", "resnet101c.gluon_in1k"], S[:2, :2])
    with pytest.raises(InputFileError, match="not card names of paper69.*resnet101c.gluon_in1k"):
        K.read_release_matrix(bad)


# ----------------------------------------------------------------------------- --plan


def test_plan_lists_all_69_with_their_current_names_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               HF_ENDPOINT="http://127.0.0.1:9", COLUMNS="250")
    p = subprocess.run([sys.executable, "-m", "satkit", "approx", "new_model", "--known", "paper69", "--plan", "--n", "1000"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for r in K.resolve_known():
        assert r.card in out and (r.timm or "missing") in out, r.card
    assert "resnet101c.gluon_in1k" in out and "timm/resnet101c.gluon_in1k" in out
    assert "69 of 69 resolve" in out or "missing:" in out
    assert "1 attack" in out and "69 known model" in out and "138000" in out
    p = subprocess.run([sys.executable, "-m", "satkit", "approx", "new_model", "--plan"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode != 0 and "--known" in p.stderr


def test_known_needs_data_and_excludes_models():
    from satkit.study.approx import ApproxRequest

    with pytest.raises(ParameterError, match="data"):
        ApproxRequest("m", known="paper69").check()
    with pytest.raises(ParameterError, match="known"):
        ApproxRequest("m", known="paper69", models=("resnet50",), data="x").check()
    with pytest.raises(ParameterError, match="unknown known set"):
        ApproxRequest("m", known="paper70", data="x").check()
    ApproxRequest("m", known="paper69", data="x").check()


# ----------------------------------------------------------------------------- end to end, stand-ins


STANDINS = {"resnet50": "test_resnet", "deit_small_patch16_224": "test_vit", "efficientnet_b2": "test_efficientnet"}


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Three tiny random-init timm models as hub repos (config.json + model.safetensors) in an offline cache."""
    import huggingface_hub.constants as hc
    import timm
    import torch
    from timm.models._hub import save_for_hf

    cache = tmp_path / "hf-cache"
    for i, arch in enumerate(STANDINS.values()):
        if not timm.is_model(arch):
            pytest.skip(f"this timm has no {arch}")
        torch.manual_seed(i)
        model = timm.create_model(arch, pretrained=False, num_classes=10)
        repo = cache / f"models--timm--{arch}.standin"
        snap = repo / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
        save_for_hf(model, snap, safe_serialization=True, model_config={"num_classes": 10})
        assert json.loads((snap / "config.json").read_text())["num_classes"] == 10
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {card: f"hf-hub:timm/{arch}.standin" for card, arch in STANDINS.items()}


def test_end_to_end_with_stand_ins_in_a_fake_hub_cache(fake_hub, tmp_path, monkeypatch):
    import torch

    from satkit.attacks import AttackParams
    from satkit.data import DataRequest

    torch.set_num_threads(1)
    names = list(STANDINS)
    S = np.array([[4.6, 2.1, 3.0], [2.1, 4.6, 2.2], [3.0, 2.2, 4.6]])
    sat = K.read_release_matrix(write_release(tmp_path / "SAT_release.csv", names, S))
    monkeypatch.setattr(K, "ALIASES", {})  # gluon_xception65 then resolves nowhere: missing, left out, said
    res = K.approx_known("digits/resnet-s1", DataRequest("digits", 40, 0, None, None), AttackParams(eps=0.1, steps=2, seed=0),
                         only=[*names, "gluon_xception65"], substitutes=fake_hub, sat=sat, k=2, batch_size=64)
    assert any(w.startswith("gluon_xception65: missing in timm") for w in res.warnings)
    # one-sided rows named by card, each stand-in evaluated once, Table 1 ids in the cluster column
    assert sorted(res.rows["model"].to_list()) == sorted(names)
    assert dict(zip(res.rows["model"], res.rows["cluster"])) == {"resnet50": 6, "deit_small_patch16_224": 1, "efficientnet_b2": 7}
    assert (res.rows["kind"] == "one-sided").all() and res.attack_forward_samples > 0 and res.forward_samples > 0
    assert res.known_names == fake_hub
    assert res.cluster_method == K.TABLE1_SOURCE and res.k == 10 and res.joined in (1, 6, 7)
    assert res.joined == min(res.cluster_scores.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    # and the released matrix's clusters (spectral, k = 2) as the second placement
    other = res.also["sat matrix"]
    assert other["k"] == 2 and set(other["clusters"]) == set(names) and other["joined"] in (1, 2)
    summary = json.loads(json.dumps(res.summary()))
    assert summary["also"]["sat matrix"]["joined"] == other["joined"] and summary["known_names"] == fake_hub
    # the CLI's report names both placements and what the known models ran as
    from satkit.cli import approx as cli

    lines: list[str] = []
    monkeypatch.setattr(cli.c, "info", lines.append)
    monkeypatch.setattr(cli.c, "print_table", lambda t: None)
    cli._print(res)
    text = "\n".join(lines)
    assert f"joins cluster {res.joined} of 10 (paper Table 1)" in text
    assert f"joins cluster {other['joined']} of 2 of the sat matrix" in text
    assert "resnet50 -> hf-hub:timm/test_resnet.standin" in text
