"""satkit distill: a distilled student learns, the teacher is untouched, teachers are ranked as documented."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from satkit.analysis.distill import DistillConfig, distill, recommend_teachers, teacher_student_sat
from satkit.cli.app import app
from satkit.data import load_data
from satkit.errors import MismatchError
from satkit.matrix.square import write_similarity_matrix
from satkit.models import ModelOptions, load_model, zoo
from tests.cli_helpers import assert_clean_error
from tests.test_zoo import reference_fit

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    # two shared cores: one thread per process avoids oversubscription (measured 5-8x faster under load)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits_train_test():
    return load_data("digits:train"), load_data("digits")


def test_distilled_student_learns_and_teacher_is_unchanged(digits_train_test):
    """digits/resnet student, digits/mixer-s1 teacher, 4 epochs of DeiT hard distillation: >= 90 % test accuracy."""
    train, test = digits_train_test
    teacher = load_model("digits/mixer-s1")
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    epochs_seen = []
    res = distill(teacher, "digits/resnet", train, test, DistillConfig(epochs=4, seed=0), on_epoch=epochs_seen.append)
    after = teacher.module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.module.training and not any(p.requires_grad for p in teacher.module.parameters())
    m = res.metrics
    assert m["mode"] == "hard" and m["teacher"] == "digits/mixer-s1" and m["epochs"] == 4
    assert m["student_accuracy"] >= 0.90, m
    assert m["teacher_accuracy"] >= 0.98
    assert [e["epoch"] for e in epochs_seen] == [1, 2, 3, 4]
    assert epochs_seen[-1]["loss"] < epochs_seen[0]["loss"]


def test_training_is_seeded(digits_train_test):
    train, test = digits_train_test
    small = load_data("digits:train", n=200)
    teacher = load_model("digits/vit-s1")
    a = distill(teacher, "digits/mixer", small, test, DistillConfig(epochs=1, seed=3, soft=True, temperature=2.0))
    b = distill(teacher, "digits/mixer", small, test, DistillConfig(epochs=1, seed=3, soft=True, temperature=2.0))
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.metrics["mode"] == "soft" and a.metrics["temperature"] == 2.0


def test_without_teacher_the_student_is_trained_like_the_zoo(digits_train_test):
    train, test = digits_train_test
    res = distill(None, "digits/vit", train, test, DistillConfig(epochs=1, seed=2))
    state, _ = zoo.train_zoo_model("vit-s2", epochs=1)
    assert state.keys() == res.state_dict.keys() and all(torch.equal(state[k], res.state_dict[k]) for k in state)


@pytest.mark.parametrize("teacher_name,student,soft", [("digits/mixer-s1", "convmixer", False), ("digits/vit-s1", "mixer", True)])
def test_distillation_reproduces_the_frozen_loop(digits_train_test, teacher_name, student, soft):
    """Student weights are exactly those of tests.test_zoo.reference_fit with the teacher term of the module docstring."""
    _, test = digits_train_test
    small = load_data("digits:train", n=200)
    teacher = load_model(teacher_name)
    a, T, seed = 0.3, 2.0, 4
    res = distill(teacher, "digits/" + student, small, test,
                  DistillConfig(epochs=2, seed=seed, soft=soft, temperature=T, alpha=a, max_shift=2, label_smoothing=0.05))

    def teacher_term(x, out):
        with torch.no_grad():
            t = teacher.module(x).float()
        if soft:
            return F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean", log_target=True) * (T * T)
        return F.cross_entropy(out, t.argmax(1))

    arch = zoo.ZOO_ARCHS[student]
    r = arch.recipe
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build()
    ref = reference_fit(model, arch.data_config, small.images, small.labels, seed=seed, epochs=2, lr=r.lr,
                        weight_decay=r.weight_decay, label_smoothing=0.05, max_shift=2, teacher_term=teacher_term, alpha=a)
    ref_state = ref.state_dict()
    assert ref_state.keys() == res.state_dict.keys() and all(torch.equal(ref_state[k], res.state_dict[k]) for k in ref_state)
    h = res.history
    assert [e["epoch"] for e in h] == [1, 2] and all(0.0 <= e["teacher_agreement"] <= 1.0 for e in h)


# ------------------------------------------------------------------ recommendation

NAMES = ["digits/convnext-s1", "digits/mixer-s1", "digits/resnet-s1", "digits/vit-s1", "digits/vit-s2", "digits/vit-s3", "mystery"]


def _matrix():
    n = len(NAMES)
    S = np.full((n, n), 2.0)
    np.fill_diagonal(S, 4.6)
    i = {m: k for k, m in enumerate(NAMES)}
    for a, b, v in (
        ("digits/vit-s1", "digits/convnext-s1", 1.5), ("digits/vit-s1", "digits/mixer-s1", 2.5),
        ("digits/vit-s1", "digits/resnet-s1", 1.0), ("digits/vit-s1", "digits/vit-s2", 3.5),
        ("digits/vit-s1", "digits/vit-s3", 4.0), ("digits/vit-s1", "mystery", 0.5),
        ("digits/vit-s2", "digits/vit-s3", 3.8),
    ):
        S[i[a], i[b]] = S[i[b], i[a]] = v
    return S


def test_recommend_ranks_as_documented():
    r = recommend_teachers("digits/vit-s1", NAMES, _matrix())
    # different base architecture first, most dissimilar first; then same base, most similar first; no card last
    assert r["teacher"].to_list() == [
        "digits/resnet-s1", "digits/convnext-s1", "digits/mixer-s1", "digits/vit-s3", "digits/vit-s2", "mystery",
    ]
    assert r["same_base"].to_list() == [False, False, False, True, True, None]
    assert r["rank"].to_list() == [1, 2, 3, 4, 5, 6]
    assert all(len(x.splitlines()) == 1 and x for x in r["reason"].to_list())
    assert "different base architecture" in r["reason"][0] and "same base architecture" in r["reason"][3]
    assert "no model card" in r["reason"][5]


def test_recommend_for_a_zoo_architecture_uses_its_models():
    S = _matrix()
    r = recommend_teachers("digits/vit", NAMES, S)
    row = r.filter(pl.col("teacher") == "digits/resnet-s1").row(0, named=True)
    i = {m: k for k, m in enumerate(NAMES)}
    expected = np.mean([S[i["digits/resnet-s1"], i[v]] for v in ("digits/vit-s1", "digits/vit-s2", "digits/vit-s3")])
    assert row["sat"] == pytest.approx(expected)
    # a vit teacher is compared with the other vit models only (not with itself)
    sat, used = teacher_student_sat(NAMES, S, "digits/vit-s2", ["digits/vit-s1", "digits/vit-s2", "digits/vit-s3"])
    assert used == ["digits/vit-s1", "digits/vit-s3"] and sat == pytest.approx((3.5 + 3.8) / 2)
    with pytest.raises(MismatchError, match="not in the SAT matrix"):
        recommend_teachers("resnet50", NAMES, S)


# ------------------------------------------------------------------ CLI


def test_cli_distill_writes_weights_and_metrics(tmp_path):
    write_similarity_matrix(tmp_path / "sat.csv", NAMES, _matrix())
    out = tmp_path / "student.safetensors"
    r = runner.invoke(app, ["distill", "--teacher", "digits/resnet-s1", "--student", "digits/vit", "--epochs", "1",
                            "-o", str(out), "--sat", str(tmp_path / "sat.csv"), "--metrics", str(tmp_path / "m.csv"),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    row = pl.read_csv(tmp_path / "m.csv").row(0, named=True)
    assert row["teacher"] == "digits/resnet-s1" and row["student"] == "student" and row["student_arch"] == "digits/vit"
    assert row["sat"] == pytest.approx((1.0 + 2.0 + 2.0) / 3)  # mean over digits/vit-s1..s3
    assert row["sat_with"] == "digits/vit-s1;digits/vit-s2;digits/vit-s3"
    # the weights load as a model with --arch and give the reported accuracy
    lm = load_model(str(out), ModelOptions(arch="digits/vit"))
    test = load_data("digits")
    with torch.no_grad():
        acc = float((lm.module(test.images.float() / 255).argmax(1) == test.labels).float().mean())
    assert acc == pytest.approx(row["student_accuracy"], abs=1e-6)
    # a second run (no teacher) appends a row
    r = runner.invoke(app, ["distill", "--student", "digits/vit", "--epochs", "1", "-o", str(tmp_path / "b.safetensors"),
                            "--metrics", str(tmp_path / "m.csv"), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    m = pl.read_csv(tmp_path / "m.csv")
    assert m.height == 2 and m["teacher"].to_list() == ["digits/resnet-s1", "none"]


def test_cli_recommend(tmp_path):
    write_similarity_matrix(tmp_path / "sat.csv", NAMES, _matrix())
    r = runner.invoke(app, ["distill", "--recommend", "--student", "digits/vit-s1", "--sat", str(tmp_path / "sat.csv"),
                            "--recommend-output", str(tmp_path / "rec.csv")])
    assert r.exit_code == 0, r.stderr
    assert pl.read_csv(tmp_path / "rec.csv")["teacher"][0] == "digits/resnet-s1"


@pytest.mark.parametrize("args,words", [
    (["--teacher", "digits/resnet-s1", "--student", "digits/nope", "-o", "{d}/s.safetensors"], ["digits/nope"]),
    (["--student", "digits/vit", "-o", "{d}/s.safetensors", "--alpha", "2"], ["--alpha"]),
    (["--student", "digits/vit", "-o", "{d}/s.pt"], [".safetensors"]),
    (["--recommend", "--student", "digits/vit"], ["--sat"]),
    (["--teacher", "digits/resnet-s1", "--student", "digits/vit", "-o", "{d}/no/such/dir/s.safetensors"], ["does not exist"]),
])
def test_cli_bad_inputs(tmp_path, args, words):
    r = runner.invoke(app, ["distill", *[a.format(d=tmp_path) for a in args]])
    assert_clean_error(r, *words)
