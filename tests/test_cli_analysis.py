"""satkit cluster / importance / cards through typer's CliRunner, as a user runs them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from satkit.cards import COMPONENTS, NAME
from satkit.cli import common as c
from tests.cli_helpers import assert_clean_error, run, runner  # noqa: F401

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# three planted blocks of paper models (all have built-in cards) + one model without a card
BLOCKS = [
    ["resnet50", "resnet101", "wide_resnet50_2", "resnext50_32x4d"],
    ["vit_small_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224", "vit_base_patch32_224"],
    ["gmlp_s16_224", "resmlp_24_224", "resmlp_big_24_224", "my_own_model"],
]
NO_CARD = "my_own_model"


@pytest.fixture(autouse=True, scope="module")
def _wide_stderr():
    """A wide stderr console so table cells (keywords) are not wrapped in the captured text."""
    old = c.err_console._width
    c.err_console.width = 200
    yield
    c.err_console._width = old


def matrix_csv(names: list[str], S: np.ndarray) -> str:
    lines = ["model," + ",".join(names)]
    lines += [n + "," + ",".join(f"{v:.4f}" for v in row) for n, row in zip(names, S)]
    return "\n".join(lines) + "\n"


def block_matrix(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """SAT ~4 inside a block, ~1 across blocks, symmetric noise, models in shuffled order."""
    rng = np.random.default_rng(seed)
    names = [n for b in BLOCKS for n in b]
    lab = np.array([i for i, b in enumerate(BLOCKS) for _ in b])
    S = np.where(lab[:, None] == lab[None, :], 4.0, 1.0) + rng.normal(0, 0.2, (len(names), len(names)))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 4.6)
    perm = rng.permutation(len(names))
    return [names[i] for i in perm], S[np.ix_(perm, perm)]


@pytest.fixture(scope="module")
def sat(tmp_path_factory):
    p = tmp_path_factory.mktemp("sat") / "sat.csv"
    p.write_text(matrix_csv(*block_matrix()))
    return p


def partition(frame: pl.DataFrame) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for m, k in zip(frame["model"], frame["cluster"]):
        groups.setdefault(k, set()).add(m)
    return {frozenset(g) for g in groups.values()}


PLANTED = {frozenset(b) for b in BLOCKS}


# ----------------------------------------------------------------------------- cluster


def test_cluster_k3_writes_csv_plots_and_keywords(sat, tmp_path):
    out, kw, png, svg = tmp_path / "clusters.csv", tmp_path / "kw.csv", tmp_path / "heat.png", tmp_path / "tsne.svg"
    r = run("cluster", sat, "-k", 3, "-o", out, "--keywords", kw, "--plot", png, "--tsne", svg)
    assert r.stdout == ""  # the data went to the file
    df = pl.read_csv(out)
    assert df.columns == ["model", "cluster", "method", "spec_1", "spec_2", "spec_3"]
    assert df["model"].to_list() == block_matrix()[0]  # file order kept
    assert partition(df) == PLANTED
    assert set(df["cluster"]) == {1, 2, 3}
    assert set(df["method"]) == {"paper"}  # the default, recorded
    Y = df.select("spec_1", "spec_2", "spec_3").to_numpy()
    assert np.allclose(Y.T @ Y, np.eye(3), atol=1e-6)  # the eigenvectors themselves (paper), not unit rows
    njw = pl.read_csv(run("cluster", sat, "-k", 3, "--method", "njw").stdout.encode())
    assert set(njw["method"]) == {"njw"} and partition(njw) == PLANTED
    assert np.allclose(np.linalg.norm(njw.select("spec_1", "spec_2", "spec_3").to_numpy(), axis=1), 1.0)
    # keywords: on stderr (cluster table) and in the CSV
    keywords = pl.read_csv(kw)
    assert keywords.columns == ["cluster", "rank", "keyword", "score", "n_models"]
    assert keywords.group_by("cluster").len()["len"].max() <= 5
    assert "Base architecture: Transformer" in keywords["keyword"].to_list()
    assert "Base architecture: Transformer" in r.stderr and "Base architecture: MLP-Mixer" in r.stderr
    # the model without a card is named, and still clustered
    assert NO_CARD in r.stderr and "warning" in r.stderr
    assert NO_CARD in df["model"].to_list()
    assert "eigengap" not in r.stderr  # k was given
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert b"<svg" in svg.read_bytes()[:2000]


def test_cluster_eigengap_from_stdin_to_stdout(sat):
    r = run("cluster", "-", input=sat.read_text())
    assert "eigengap" in r.stderr and "chosen" in r.stderr
    df = pl.read_csv(r.stdout.encode())
    assert df.columns == ["model", "cluster", "method", "spec_1", "spec_2", "spec_3"]  # eigengap chose k = 3
    assert partition(df) == PLANTED
    # same result as from the file, and quiet drops the tables but keeps the data
    q = run("cluster", sat, "--quiet")
    assert q.stdout == r.stdout
    assert "eigengap" not in q.stderr and "clusters" not in q.stderr


# ----------------------------------------------------------------------------- importance


def test_importance_writes_13_rows_and_plot(sat, tmp_path):
    out, png = tmp_path / "imp.csv", tmp_path / "imp.png"
    r = run("importance", sat, "-o", out, "--plot", png)
    df = pl.read_csv(out)
    assert df.columns == ["rank", "component", "importance_mean", "importance_std"]
    assert df.height == 13 and sorted(df["component"]) == sorted(COMPONENTS)
    assert df["rank"].to_list() == list(range(1, 14))
    assert df["component"][0] == "Base architecture"  # the blocks are the three base architectures
    assert "held-out R^2" in r.stderr and "read them with care" not in r.stderr
    assert NO_CARD in r.stderr  # left out, but named
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_importance_stdin_low_r2_caution():
    names = BLOCKS[0] + BLOCKS[1] + BLOCKS[2][:3]  # all with cards
    rng = np.random.default_rng(5)
    S = rng.normal(3.0, 0.5, (len(names), len(names)))
    S = (S + S.T) / 2  # noise: the components cannot predict it
    r = run("importance", "-", input=matrix_csv(names, S))
    df = pl.read_csv(r.stdout.encode())
    assert df.height == 13
    assert "read them with care" in " ".join(r.stderr.split())


# ----------------------------------------------------------------------------- cards


def test_cards_list_show_export_roundtrip(tmp_path):
    r = run("cards", "list")
    names = r.stdout.split()
    assert "resnet50" in names and "digits/vit-s1" in names and len(names) >= 69
    assert "Base architecture" in r.stderr and "Stem layer" in r.stderr

    r = run("cards", "show", "resnet50")
    lines = r.stdout.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == COMPONENTS
    assert "Base architecture: CNN" in lines and "Stem layer: 7s2" in lines
    assert run("cards", "show", "timm:resnet50.a1_in1k").stdout == r.stdout  # tags / prefix ignored

    out = tmp_path / "cards.csv"
    run("cards", "export", "-o", out)
    exported = pl.read_csv(out, infer_schema=False)
    assert exported.columns == [NAME, *COMPONENTS]
    assert exported[NAME].to_list() == names
    # the export is a valid user card file: edit one card, add one, read back
    edited = pl.concat([
        exported.with_columns(pl.when(pl.col(NAME) == "resnet50").then(pl.lit("GN")).otherwise(pl.col("Normalization")).alias("Normalization")),
        exported.filter(pl.col(NAME) == "resnet50").with_columns(pl.lit("my_net").alias(NAME)),
    ])
    edited.write_csv(tmp_path / "mine.csv")
    assert "Normalization: GN" in run("cards", "show", "resnet50", "--cards", tmp_path / "mine.csv").stdout
    assert "my_net" in run("cards", "list", "--cards", tmp_path / "mine.csv").stdout.split()
    assert run("cards", "export").stdout == out.read_text()  # stdout by default


def test_cards_show_unknown_names_close_matches():
    assert_clean_error(run("cards", "show", "resnet5", ok=False), "resnet5", "did you mean", "resnet50")


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_files(tmp_path):
    names, S = block_matrix()
    (tmp_path / "nonsquare.csv").write_text("model,a,b,c\na,1,2,3\nb,2,1,3\n")
    nan = S.copy()
    nan[1, 2] = np.nan
    (tmp_path / "nan.csv").write_text(matrix_csv(names, nan).replace("nan", ""))
    dup = list(names)
    dup[1] = dup[0]
    (tmp_path / "dup.csv").write_text(matrix_csv(dup, S))
    (tmp_path / "good.csv").write_text(matrix_csv(names, S))
    pl.DataFrame({NAME: ["x"], **{comp: ["a"] for comp in COMPONENTS[:-1]}}).write_csv(tmp_path / "cards_bad.csv")
    return tmp_path


@pytest.mark.parametrize(
    "args, words",
    [
        (["cluster", "nonsquare.csv", "-o", "OUT"], ["not square"]),
        (["cluster", "nan.csv", "-o", "OUT"], ["NaN"]),
        (["cluster", "dup.csv", "-o", "OUT"], ["duplicate", block_matrix()[0][0]]),
        (["cluster", "missing.csv", "-o", "OUT"], ["no such file"]),
        (["cluster", "good.csv", "--cards", "cards_bad.csv", "-o", "OUT"], ["Group conv"]),
        (["cluster", "good.csv", "-o", "nodir/clusters.csv"], ["does not exist"]),
        (["cluster", "good.csv", "--plot", "nodir/heat.png", "-o", "OUT"], ["does not exist"]),
        (["cluster", "good.csv", "--plot", "heat.jpg", "-o", "OUT"], ["plot format"]),
        (["cluster", "good.csv", "-k", "50", "-o", "OUT"], ["k must be"]),
        (["cluster", "-", "--cards", "-", "-o", "OUT"], ["stdin"]),
        (["importance", "nonsquare.csv", "-o", "OUT"], ["not square"]),
        (["importance", "nan.csv", "-o", "OUT"], ["NaN"]),
        (["importance", "dup.csv", "-o", "OUT"], ["duplicate"]),
        (["importance", "good.csv", "--cards", "cards_bad.csv", "-o", "OUT"], ["Group conv"]),
        (["importance", "good.csv", "-o", "nodir/imp.csv"], ["does not exist"]),
        (["cards", "list", "--cards", "cards_bad.csv"], ["Group conv"]),
        (["cards", "export", "-o", "nodir/cards.csv"], ["does not exist"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_inputs_are_one_line_errors(bad_files, args, words):
    out = bad_files / "out.csv"
    args = [str(out) if a == "OUT" else (str(bad_files / a) if a.endswith((".csv", ".png", ".jpg")) else a) for a in args]
    before = set(p.name for p in bad_files.rglob("*"))
    r = run(*args, ok=False, input="")
    assert_clean_error(r, *words)
    assert r.stdout == ""
    assert not out.exists() and not (bad_files / "nodir").exists()
    assert set(p.name for p in bad_files.rglob("*")) == before  # nothing written, not even a temporary file
