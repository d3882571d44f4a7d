"""satkit approx: one-sided SAT of a left-out zoo model vs its full SAT row, and the cluster it joins."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import pearsonr
from typer.testing import CliRunner

from satkit.attacks import AttackParams
from satkit.cli.app import app
from satkit.matrix.sat import sat_value
from satkit.matrix.square import read_similarity_matrix
from satkit.study import StudyConfig, default_models, run_study
from satkit.study import read_settings as read_study
from satkit.study.approx import approx_from_study

pytestmark = pytest.mark.slow  # builds a 9- and a 10-model zoo study

runner = CliRunner()
NEW = "digits/resnet-s3"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: avoid oversubscription
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A 9-model zoo study without resnet-s3, and the full 10-model study (the 9 plus resnet-s3)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("approx")
    params = AttackParams(eps=0.1, steps=10)
    known = [m for m in default_models() if m != NEW]
    run_study(StudyConfig.create(known, root / "s9", params=params, n=60))
    shutil.copytree(root / "s9", root / "s10")  # adding a model to a finished study: one attack + its transfers
    run_study(StudyConfig.create(known + [NEW], root / "s10", params=params, n=60))
    torch.set_num_threads(old)
    return root / "s9", root / "s10"


def test_approx_row_correlates_with_full_row_and_joins_resnet_cluster(studies):
    s9, s10 = studies
    res = approx_from_study(NEW, s9)
    assert not res.attack_reused and res.attack_forward_samples == 60 * 12
    rows = res.rows
    assert rows.height == 9 and NEW not in rows["model"].to_list()
    # formula: ln(max(eps_s, 100 * fooled / |X_NB|)), one-sided
    for r in rows.iter_rows(named=True):
        assert r["sat_approx"] == pytest.approx(sat_value(r["n_fooled"], r["n_fooled"], r["n_both"], 1.0))
        assert r["fool_rate"] == pytest.approx(r["n_fooled"] / r["n_both"])
    # cost: only X_NB of each known model went through it (clean correctness came from the study's attack files)
    assert res.forward_samples == int(rows["n_both"].sum())
    names, S = read_similarity_matrix(s10 / "sat.csv")
    i = names.index(NEW)
    full = [S[i, names.index(m)] for m in rows["model"].to_list()]
    r, p = pearsonr(rows["sat_approx"].to_numpy(), full)
    assert r > 0.5 and p < 0.05, (r, p)
    members = res.members(res.joined)
    assert {"digits/resnet-s1", "digits/resnet-s2"} <= set(members), (res.joined, members, res.cluster_scores)
    assert res.margin is not None and res.margin > 0
    res4 = approx_from_study(NEW, s9, k=4)
    assert {"digits/resnet-s1", "digits/resnet-s2"} <= set(res4.members(res4.joined))
    # the approximation is exactly the N -> B half of full SAT: same |X_NB| and fooled counts as the full study
    from satkit.study import slug

    for r in rows.iter_rows(named=True):
        t = pl.read_csv(s10 / "transfer" / f"{slug(r['model'])}.csv").filter(pl.col("source") == NEW).row(0, named=True)
        assert (t["n_both"], t["n_fooled"]) == (r["n_both"], r["n_fooled"]), r["model"]


def test_leave_one_out_exact_rows_equal_the_full_study_to_the_last_bit(studies):
    """Each model placed against the other 9 of the 10-model study: every row is exact and equals sat.csv."""
    _, s10 = studies
    names, S = read_similarity_matrix(s10 / "sat.csv")
    one_sided, exact, full = [], [], []
    for i, m in enumerate(names):
        res = approx_from_study(m, s10)
        assert res.attack_reused and res.exact
        for r in res.rows.iter_rows(named=True):
            j = names.index(r["model"])
            assert r["kind"] == "exact" and r["sat"] == S[i, j], (m, r["model"], r["sat"], S[i, j])
            assert r["sat"] == sat_value(r["n_fooled"], r["n_fooled_new"], r["n_both"], 1.0)
            one_sided.append(r["sat_approx"]), exact.append(r["sat"]), full.append(S[i, j])
        assert res.margin_ci is not None and res.margin_ci[0] <= res.margin <= res.margin_ci[1]
    assert pearsonr(exact, full)[0] == pytest.approx(1.0)
    assert pearsonr(one_sided, full)[0] < 0.99  # the one-sided estimate is only an estimate


def test_stale_known_attack_leaves_that_row_one_sided_and_one_sided_opts_out(studies, tmp_path):
    s9, _ = studies
    d = tmp_path / "s9"
    shutil.copytree(s9, d)
    from satkit.study import slug

    # vit-s2's stored attack replaced by vit-s1's: it no longer answers the study's request for vit-s2
    shutil.copy(d / "attacks" / f"{slug('digits/vit-s1')}.safetensors", d / "attacks" / f"{slug('digits/vit-s2')}.safetensors")
    res = approx_from_study(NEW, d)
    kinds = dict(zip(res.rows["model"].to_list(), res.rows["kind"].to_list()))
    assert kinds.pop("digits/vit-s2") == "one-sided" and set(kinds.values()) == {"exact"}
    assert not res.exact and any("digits/vit-s2" in w and "one-sided" in w for w in res.warnings)
    row = res.rows.filter(pl.col("model") == "digits/vit-s2").row(0, named=True)
    assert row["sat"] is None and row["n_fooled_new"] is None and row["sat_approx"] is not None
    g1 = approx_from_study(NEW, s9, one_sided=True)
    assert (g1.rows["kind"] == "one-sided").all() and g1.rows["sat"].is_null().all() and g1.forward_samples_new == 0
    exact = approx_from_study(NEW, s9)
    assert exact.rows.select("model", "n_both", "n_fooled", "sat_approx").equals(g1.rows.select("model", "n_both", "n_fooled", "sat_approx"))
    assert exact.forward_samples_new == int(exact.rows["n_both"].sum())  # N over each known model's X_NB, once


def test_model_in_study_is_left_out_and_its_attack_reused(studies):
    _, s10 = studies
    reused = approx_from_study(NEW, s10)
    fresh = approx_from_study(NEW, s10, reuse_attack=False)
    assert reused.attack_reused and not fresh.attack_reused
    assert reused.rows.equals(fresh.rows)  # the attack is deterministic: same numbers either way
    assert NEW not in (reused.cluster_names or [])
    assert any("part of the study" in w for w in reused.warnings)


def test_cli_study_mode(studies, tmp_path):
    s9, _ = studies
    r = runner.invoke(app, ["approx", NEW, "--study", str(s9), "-o", str(tmp_path / "a.csv"), "--summary", str(tmp_path / "a.json"),
                            "--save-attack", str(tmp_path / "new.safetensors"), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    df = pl.read_csv(tmp_path / "a.csv")
    assert df.columns == ["model", "cluster", "kind", "n_both", "n_fooled", "fool_rate", "sat_approx", "n_fooled_new", "sat"]
    assert df.height == 9 and (df["kind"] == "exact").all()
    s = json.loads((tmp_path / "a.json").read_text())
    assert "digits/resnet-s1" in s["joined_members"]
    from satkit.formats import read_satkit_file

    f = read_satkit_file(tmp_path / "new.safetensors", "satkit.attack")
    assert f.provenance["data"]["fingerprint"] == read_study(s9).fingerprint


def test_cli_explicit_models(tmp_path):
    r = runner.invoke(app, ["approx", NEW, "--models", "digits/resnet-s1,digits/mixer-s1", "--models", "digits/vit-s1",
                            "--n", "30", "--steps", "3", "-o", str(tmp_path / "a.csv"), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    df = pl.read_csv(tmp_path / "a.csv")
    assert df["model"].to_list() == ["digits/resnet-s1", "digits/mixer-s1", "digits/vit-s1"]
    assert df["cluster"].null_count() == 3 and np.all(df["n_both"].to_numpy() <= 30)


@pytest.mark.parametrize("args,words", [
    (["--study", "{d}/nope"], ["no such study directory"]),
    (["--study", "{s9}", "--eps", "0.2"], ["--eps", "study"]),
    ([], ["--study", "--models"]),
    (["--study", "{s9}", "--models", "digits/vit-s1"], ["models", "cannot be given with a study"]),
    (["--study", "{d}"], ["not a study directory"]),
])
def test_cli_bad_inputs(studies, tmp_path, args, words):
    s9, _ = studies
    r = runner.invoke(app, ["approx", NEW, *[a.format(d=tmp_path, s9=s9) for a in args]])
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("satkit: error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("method", ["paper", "njw"])
def test_approx_clusters_with_the_studys_method(studies, tmp_path, method):
    """approx --study clusters the study's matrix the way the study did (study.json's cluster_method)."""
    from satkit.analysis.cluster import spectral_cluster

    s9, _ = studies
    d = tmp_path / "s9"
    shutil.copytree(s9, d)
    settings = json.loads((d / "study.json").read_text())
    assert settings["cluster_method"] == "paper"  # the default, recorded by the study
    settings["cluster_method"] = method
    (d / "study.json").write_text(json.dumps(settings))
    res = approx_from_study(NEW, d, k=3)
    assert res.cluster_method == method and res.summary()["cluster_method"] == method
    names, S = read_similarity_matrix(d / "sat.csv")
    want = spectral_cluster(names, S, 3, method=method)
    assert dict(zip(res.cluster_names, map(int, res.cluster_labels))) == dict(zip(want.names, map(int, want.labels)))
