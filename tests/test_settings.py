"""One source per setting (issue 21, s3), and one study pipeline whatever the sampling plan (s1).

- each default (SAT floor, steps, step-size rule, cluster method, eps per data source) is
  defined once in the package: satkit/settings.py;
- the report's "how to rerun" command of a study made with -k 3 --ci 0.9 reproduces its
  sat.csv, sat_long.csv and clusters.csv byte for byte in a new directory;
- an adaptive study's root is a study: satkit report, satkit approx --study and --plan work on it.
"""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import pytest
from safetensors.torch import save_file

from satkit import settings as S
from tests.cli_helpers import assert_clean_error, run

PKG = Path(__file__).resolve().parent.parent / "satkit"
MODELS = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1"]


def _literal_definitions(value, names: set[str], flags: set[str]) -> list[str]:
    """Where ``value`` is written as a literal default of a setting called one of ``names``: assigned to
    such a name (or dataclass field), a parameter's default, or typer.Option(value, <one of flags>)."""
    def same(node) -> bool:
        try:
            v = ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError):
            return False
        return type(v) is type(value) and v == value

    hits = []
    for p in PKG.rglob("*.py"):
        where = str(p.relative_to(PKG.parent))
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and same(node.value):
                if any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
                    hits.append(f"{where}:{node.lineno}")
            elif isinstance(node, ast.AnnAssign) and node.value is not None and same(node.value):
                if isinstance(node.target, ast.Name) and node.target.id in names:
                    hits.append(f"{where}:{node.lineno}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
                hits += [f"{where}:{d.lineno}" for arg, d in pairs if d is not None and arg.arg in names and same(d)]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option" and node.args:
                opts = {c.value for c in node.args[1:] if isinstance(c, ast.Constant)}
                if opts & flags and same(node.args[0]):
                    hits.append(f"{where}:{node.lineno}")
    return hits


DEFAULTS = [  # value, the names the setting goes by, its flags
    (S.EPS_S, {"eps_s", "EPS_S", "DEFAULT_EPS_S"}, {"--eps-s"}),
    (S.STEPS, {"steps", "STEPS"}, {"--steps"}),
    (S.CLUSTER_METHOD, {"method", "cluster_method", "CLUSTER_METHOD"}, {"--method", "--cluster-method"}),
    (S.DIGITS_EPS, {"eps", "DIGITS_EPS"}, {"--eps"}),
    (S.NATURAL_EPS, {"eps", "NATURAL_EPS", "IMAGENET_EPS"}, {"--eps"}),
    (S.CHUNK, {"chunk", "CHUNK"}, {"--chunk"}),
    (S.N_BOOT, {"n_boot", "N_BOOT"}, {"--n-boot"}),
]


@pytest.mark.parametrize("value, names, flags", DEFAULTS, ids=[sorted(d[1])[0] for d in DEFAULTS])
def test_each_default_is_defined_once(value, names, flags):
    hits = _literal_definitions(value, names, flags)
    assert len(hits) <= 1 and all(h.startswith("satkit/settings.py") for h in hits), hits
    assert any(getattr(S, n, None) == value for n in names)  # ... and there


def test_eps_per_data_source_and_step_rule_are_defined_once():
    text = {p: p.read_text(encoding="utf-8") for p in PKG.rglob("*.py")}
    for needle in ("8 / 255", "2.5 * eps"):  # the natural-image budget and PGD's step rule, as code
        assert [str(p.relative_to(PKG)) for p, t in text.items() if needle in t] == ["settings.py"], needle
    from satkit.attacks import ATTACKS, AttackParams
    from satkit.data import default_eps

    assert ATTACKS["pgd"].default_step is S.madry_step and ATTACKS["lf-pgd"].default_step is S.madry_step
    assert (default_eps("digits"), default_eps("x/"), AttackParams().eps) == (S.DIGITS_EPS, S.NATURAL_EPS, S.NATURAL_EPS)
    assert AttackParams().steps == S.STEPS


def test_library_errors_name_fields_and_the_cli_shows_flags(tmp_path):
    from satkit.attacks import AttackParams
    from satkit.errors import ParameterError

    with pytest.raises(ParameterError, match=r"^eps must be"):
        AttackParams(eps=2.0)
    assert S.flag_message("eps must be in [0, 1]") == "--eps must be in [0, 1]"
    assert S.flag_message("k clusters a SAT matrix") == "-k clusters a SAT matrix"
    assert_clean_error(run("study", "--eps", "2", "-o", tmp_path / "s", ok=False), "--eps must be")
    assert_clean_error(run("study", "--ci", "0.9", "--n-boot", "5", "-o", tmp_path / "s", ok=False), "--n-boot must")


def _rerun_line(study: Path) -> str:
    from satkit.study import read_settings

    return read_settings(study).rerun_command(study)


@pytest.mark.slow
def test_rerun_command_reproduces_a_study_with_k_and_ci(tmp_path):
    first = tmp_path / "first"
    run("study", "-q", *MODELS, "--n", "60", "--steps", "3", "-k", "3", "--ci", "0.9", "--n-boot", "200", "-o", first)
    line = _rerun_line(first)
    assert all(w in line for w in ("-k 3", "--ci 0.9", "--n-boot 200", "--steps 3", "--n 60")), line
    argv = shlex.split(line)
    assert argv[:2] == ["satkit", "study"] and argv[-2] == "-o"
    second = tmp_path / "second"
    run(*argv[1:-1], second, "-q")
    for name in ("sat.csv", "sat_long.csv", "clusters.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert json.loads((second / "study.json").read_text()) == json.loads((first / "study.json").read_text())


@pytest.fixture(scope="module")
def adaptive_study(tmp_path_factory):
    from satkit.data import load_data

    root = tmp_path_factory.mktemp("adaptive-root")
    d = load_data("digits", n=60, seed=1)
    data = root / "d60.safetensors"
    save_file({"images": d.images, "labels": d.labels}, str(data))
    out = root / "study"
    run("study", "-q", *MODELS, "--data", data, "--eps", "0.1", "--steps", "2", "--precision", "1e-9", "--chunk", "20", "-o", out)
    return out, data


@pytest.mark.slow
def test_adaptive_root_is_a_study(adaptive_study, tmp_path):
    from satkit.matrix.square import read_similarity_matrix
    out, data = adaptive_study
    from satkit.study import read_settings

    st = read_settings(out)
    assert st.precision == 1e-9 and st.chunk == 20 and st.adaptive["chunks_used"] == 3
    assert [h["images"] for h in st.adaptive["history"]] == [20, 40, 60]
    assert {"sat.csv", "sat_long.csv", "report.html", "models.csv"} <= {p.name for p in out.iterdir()}
    # satkit report
    run("report", "-q", out, "-o", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "SAT study" in page
    # how the widest interval fell with images added: one row per chunk
    import re

    precision = re.sub(r"<[^>]+>", " ", page[page.index('id="precision"'):page.index('id="files"')])
    assert all(re.search(rf"\b{k}\s+{k * 20}\b", precision) for k in (1, 2, 3)), precision
    assert "stopped by" in precision
    # --plan: everything done, the chunks counted
    r = run("study", *MODELS, "--data", data, "--eps", "0.1", "--steps", "2", "--precision", "1e-9", "--chunk", "20", "--plan", "-o", out)
    assert "3 chunk(s) at most (3 done)" in r.stdout and "attacks to run: 0 (9 already done)" in r.stdout
    # the rerun command names the sampling plan
    line = _rerun_line(out)
    assert "--precision 1e-09" in line and "--chunk 20" in line
    # satkit approx --study: a study model against the others, summed over the chunks
    r = run("approx", "digits/resnet-s1", "--study", out, "-k", "2", "-o", tmp_path / "a.csv", "--summary", tmp_path / "a.json")
    s = json.loads((tmp_path / "a.json").read_text())
    assert s["attack_reused"] and {row["model"] for row in s["rows"]} == {"digits/vit-s1", "digits/mixer-s1"}
    assert all(0 < row["n_both"] <= 60 for row in s["rows"])
    # exact rows over the chunks: the full SAT of the root's matrix, and the report shows them as exact
    names, S = read_similarity_matrix(out / "sat.csv")
    for row in s["rows"]:
        assert row["kind"] == "exact" and row["sat"] == S[names.index("digits/resnet-s1"), names.index(row["model"])]
    (out / "approx-resnet-s1.json").write_text((tmp_path / "a.json").read_text())
    run("report", "-q", out, "-o", tmp_path / "r2.html")
    placed = re.sub(r"<[^>]+>", " ", (tmp_path / "r2.html").read_text(encoding="utf-8"))
    assert "exact rows; joins cluster" in placed and "interval" in placed
