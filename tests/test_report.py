"""report.html: sections, escaping of an untrusted study directory, the rerun line, `satkit report`;
and a real study rendered in headless Chromium (screenshot and DOM), as a person would look at it."""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from satkit.attacks import AttackParams
from satkit.data import DataRequest
from satkit.errors import InputFileError
from satkit.matrix.square import write_similarity_matrix
from satkit.study.layout import StudySettings
from satkit.study.report import SECTIONS, build_report, write_report
from tests.cli_helpers import assert_clean_error, run

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Dom(HTMLParser):
    """Every start tag with its attributes, every section id, and the text of each SVG <title>."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.titles: list[str] = []
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"
        if tag == "title":
            self.titles.append("")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles[-1] += data

    def ids(self, tag: str) -> set[str]:
        return {a.get("id") for t, a in self.tags if t == tag}

    def cell_titles(self) -> list[str]:
        return [t for t in self.titles if " × " in t]


def assert_self_contained_and_inert(dom: Dom) -> None:
    """No script, no event handler, every image inline, no link or source leaves the file."""
    assert "script" not in {t for t, _ in dom.tags}
    for tag, attrs in dom.tags:
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/"), attrs.get("src", "")[:60]
        for k in ("src", "href", "xlink:href", "action", "data"):
            v = (attrs.get(k) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "file:", "javascript:")), (tag, k, v[:80])
    assert {"link", "iframe", "object", "embed", "base"}.isdisjoint(t for t, _ in dom.tags)


# ----------------------------------------------------------------------------- a study directory made by hand


def fake_study(root: Path, names: list[str], *, models: list[str] | None = None, eps_s: float = 1.0) -> Path:
    """study.json, sat.csv, sat_long.csv with intervals, clusters, keywords: what satkit study writes, no attack files."""
    root.mkdir(parents=True, exist_ok=True)
    n = len(names)
    rng = np.random.default_rng(0)
    S = rng.uniform(1.5, 3.5, (n, n))
    S = (S + S.T) / 2
    np.fill_diagonal(S, math.log(100))
    settings = StudySettings(models=tuple(models or names), data=DataRequest("digits", 40), params=AttackParams(eps=0.1, steps=3),
                             amp="off", eps_s=eps_s, fingerprint="ab" * 16)
    (root / "study.json").write_text(settings.to_json())
    write_similarity_matrix(root / "sat.csv", names, S)
    rows = []
    for i in range(n):
        for j in range(i, n):
            rate = math.exp(S[i, j]) / 100
            rows.append({"a": names[i], "b": names[j], "n_both": 37, "fool_rate_a_to_b": rate, "fool_rate_b_to_a": rate,
                         "sat": S[i, j], "sat_ci_low": S[i, j] - 0.1, "sat_ci_high": S[i, j] + 0.2})
    pl.DataFrame(rows).write_csv(root / "sat_long.csv")
    pl.DataFrame({"model": names, "cluster": [1 + (i % 2) for i in range(n)], "method": ["paper"] * n}).write_csv(root / "clusters.csv")
    pl.DataFrame({"cluster": [1, 2], "rank": [1, 1], "keyword": [f"Stem: {HOSTILE}", "Base architecture: CNN"],
                  "score": [0.5, 0.4], "n_models": [1, 1]}).write_csv(root / "keywords.csv")
    return root


def test_report_has_every_section_and_a_title_per_cell(tmp_path):
    names = ["digits/a", "digits/b", "digits/c"]
    html = build_report(fake_study(tmp_path / "s", names))
    dom = Dom(html)
    assert set(SECTIONS) <= dom.ids("section")
    titles = dom.cell_titles()
    assert len(titles) == 9
    t = next(t for t in titles if t.startswith("digits/a × digits/b"))
    assert "SAT " in t and "transfer " in t and "|X_AB| = 37" in t and "interval [" in t
    assert_self_contained_and_inert(dom)
    assert 'name="viewport"' in html and "@media print" in html


def test_everything_read_from_the_directory_is_escaped(tmp_path):
    names = ["ok", HOSTILE, "x&y"]
    root = fake_study(tmp_path / "s", names, models=["ok", HOSTILE, "x&y"])
    (root / "clusters.png").write_bytes(b"<svg onload=alert(3)>not a png</svg>")
    (root / "approx-evil.json").write_text(json.dumps({
        "model": HOSTILE, "joined": HOSTILE, "runner_up": 2, "margin": "<b>",
        "rows": [{"model": HOSTILE, "cluster": "<i>", "n_both": 3, "sat_approx": 2.0}]}))
    pl.DataFrame({"model": names, "weights_id": [HOSTILE] * 3, "parameters": [1, 2, 3]}).write_csv(root / "models.csv")
    (root / "<img src=x onerror=alert(5)>.csv").write_text("x")
    secret = tmp_path / "secret.txt"
    secret.write_text("cluster,rank,keyword\n1,1,PRIVATE-KEY-MATERIAL\n")
    (root / "keywords.csv").unlink()
    (root / "keywords.csv").symlink_to(secret)  # a shared directory pointing at the reader's files
    (root / "importance.csv").write_text("rank,component,importance_mean\nx,<b>,not-a-number\n")
    (root / "ensemble.json").write_text(json.dumps({"grid": [1, "<x>", {"m": HOSTILE}], "member_errors": [HOSTILE]}))
    html = build_report(root)
    dom = Dom(html)
    assert_self_contained_and_inert(dom)
    assert [t for t, _ in dom.tags].count("img") == 0  # the fake PNG was left out
    assert "clusters.png: not a PNG image" in html
    assert "PRIVATE-KEY-MATERIAL" not in html and "keywords.csv is a symbolic link; left out" in html
    assert "&lt;img src=x onerror=alert(5)&gt;.csv" in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5  # settings, models, heatmap titles, approx, keywords
    assert any(HOSTILE in t for t in dom.cell_titles())  # shown as text, exactly


QUOTES = """<script>alert(1)</script>"'&"""


def test_names_and_card_text_are_escaped_by_the_template(tmp_path):
    """A model named with markup and every quote character, and card keywords holding it: the page shows
    the text, escaped where it lands (element text, attribute-free cells, <pre>, SVG <title>), never raw."""
    names = ["ok", QUOTES, "b"]
    root = fake_study(tmp_path / "s", names)
    pl.DataFrame({"cluster": [1, 2], "rank": [1, 1], "keyword": [f"Stem: {QUOTES}", "Norm: BN"],
                  "score": [0.5, 0.4], "n_models": [1, 1]}).write_csv(root / "keywords.csv")
    pl.DataFrame({"model": names, "weights_id": [QUOTES] * 3, "input_size": [QUOTES] * 3}).write_csv(root / "models.csv")
    html = build_report(root)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;"
    assert "<script" not in html and "alert(1)</script>" not in html
    assert html.count(escaped) >= 6  # settings, rerun line, models, clusters, keywords, intervals, hover texts
    assert f"Stem: {escaped}" in html
    dom = Dom(html)
    assert_self_contained_and_inert(dom)
    assert any(t.startswith(f"ok × {QUOTES}\n") for t in dom.cell_titles())  # the hover text, exactly


def test_the_template_escapes_by_default():
    """Escaping is the environment's default and a field the view lacks is an error, not an empty string."""
    import jinja2

    from satkit.study.report import _template
    from satkit.study.report_view import ReportView, Section

    env = _template().environment
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined
    view = ReportView(title="<b>t</b>", n_models=0, data_source="x", satkit_version="0",
                      sections={sid: Section(absent="<i>none</i>") for sid in SECTIONS})
    page = _template().render(v=view, titles=SECTIONS)
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page and "&lt;i&gt;none&lt;/i&gt;" in page
    with pytest.raises(jinja2.UndefinedError):
        _template().render(v=ReportView("t", 0, "x", "0", {**view.sections, "models": Section()}), titles=SECTIONS)


def test_missing_or_broken_inputs(tmp_path):
    with pytest.raises(InputFileError, match="no such study directory"):
        build_report(tmp_path / "nothing")
    root = fake_study(tmp_path / "s", ["a", "b", "c"])
    (root / "clusters.csv").write_text("model,cluster\na,1\n")  # another set of models
    (root / "keywords.csv").write_bytes(b"\xff\xfe\x00garbage")
    html = build_report(root)
    assert "does not cluster the models of sat.csv" in html
    (root / "sat.csv").write_text("model,a,b\na,1,2\nc,2,1\n")
    with pytest.raises(InputFileError, match="row names differ from column names"):  # the one sat.csv reader
        build_report(root)
    (root / "sat.csv").unlink()
    with pytest.raises(InputFileError, match="no sat.csv"):
        build_report(root)


def test_an_unmeasured_pair_is_an_empty_cell(tmp_path):
    """sat.csv leaves a pair with an empty X_AB empty: the one matrix reader takes it (allow_empty), the cell says so."""
    root = fake_study(tmp_path / "s", ["a", "b", "c"])
    lines = (root / "sat.csv").read_text().splitlines()
    lines[1] = re.sub(r",[^,]*$", ",", lines[1])  # (a, c)
    lines[3] = re.sub(r"^c,[^,]*", "c,", lines[3])  # (c, a)
    (root / "sat.csv").write_text("\n".join(lines) + "\n")
    titles = Dom(build_report(root)).cell_titles()
    assert sorted(t for t in titles if "not measured" in t) == ["a × c: not measured", "c × a: not measured"]


def test_rerun_line_is_rebuilt_and_quoted(tmp_path):
    s = StudySettings(models=("digits/resnet-s1", "my model;rm -rf ~.pt"), data=DataRequest("/data/my val", 100, 3, 224),
                      params=AttackParams(eps=8 / 255, steps=10, seed=2, storage="float16"), amp="bf16", eps_s=0.5,
                      fingerprint="f" * 32, cluster_method="njw")
    line = s.rerun_command(tmp_path / "st udy")
    argv = shlex.split(line)
    assert argv[:4] == ["satkit", "study", "digits/resnet-s1", "my model;rm -rf ~.pt"]
    for opt, val in [("--data", "/data/my val"), ("--n", "100"), ("--data-seed", "3"), ("--canvas", "224"), ("--eps", "8/255"),
                     ("--steps", "10"), ("--seed", "2"), ("--storage", "float16"), ("--eps-s", "0.5"), ("--amp", "bf16"),
                     ("--cluster-method", "njw"), ("-o", str(tmp_path / "st udy"))]:
        assert argv[argv.index(opt) + 1] == val, opt
    assert "--step-size" not in argv  # the default 2.5 eps / steps
    bad = StudySettings(models=("-rf",), data=DataRequest("digits"), params=AttackParams(eps=0.1), amp="off", eps_s=1.0, fingerprint="f")
    assert bad.rerun_command(tmp_path).startswith("(cannot be rebuilt")


def test_report_cli(tmp_path):
    root = fake_study(tmp_path / "s", ["a", "b", "c"])
    r = run("report", root, "-o", "-")
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.rstrip().endswith("</html>")
    run("report", root)
    assert (root / "report.html").read_text().startswith("<!DOCTYPE html>")
    out = tmp_path / "r.html"
    run("report", root, "-o", out)
    assert Dom(out.read_text()).ids("section") >= set(SECTIONS)
    assert_clean_error(run("report", root, "-o", root / "sat.csv", ok=False), "also an input")
    assert_clean_error(run("report", tmp_path / "none", "-o", out, ok=False), "no such study directory")
    assert_clean_error(run("report", root, "-o", tmp_path / "no" / "r.html", ok=False), "does not exist")


# ----------------------------------------------------------------------------- a real study in a real browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = chromium()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked for, from Chromium's net log (the browser's own background requests have no origin)."""
    events = json.loads(netlog.read_text())["events"]
    return [ev["params"]["url"] for ev in events
            if isinstance(ev.get("params"), dict) and "url" in ev["params"] and "initiator" in ev["params"]
            and ev["params"]["initiator"] != "not an origin"]


def colourful(rgb: np.ndarray) -> np.ndarray:
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 60


def heatmap_band(rgb: np.ndarray) -> tuple[int, int]:
    """Rows of the first tall block of colour from the top: the heatmap (the settings above it are text).

    Gaps of a few rows (the white lines between clusters) do not end the block.
    """
    busy = np.flatnonzero(colourful(rgb).sum(axis=1) > 120)
    start = prev = None
    for y in busy:
        if start is None or y - prev > 12:
            if start is not None and prev - start >= 150:
                return int(start), int(prev) + 1
            start = y
        prev = y
    if start is not None and prev - start >= 150:
        return int(start), int(prev) + 1
    raise AssertionError("no block of colour in the screenshot")


@pytest.fixture(scope="module")
def real_study(tmp_path_factory):
    from satkit.study import StudyConfig, run_study

    out = tmp_path_factory.mktemp("study") / "study"
    models = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1", "digits/convmixer-s1"]
    res = run_study(StudyConfig.create(models, out, n=40, params=AttackParams(eps=0.1, steps=3)))
    return out, res


@pytest.mark.slow
def test_study_writes_heatmap_models_and_report(real_study):
    out, res = real_study
    assert res.report == out / "report.html" and res.report.is_file()
    for f in ("sat.png", "sat.svg"):
        assert (out / f).stat().st_size > 1000
    m = pl.read_csv(out / "models.csv")
    assert m.columns == ["model", "weights_id", "clean_accuracy", "self_attack_success", "eps", "storage", "eps_stored",
                         "parameters", "input_size", "cluster"]
    row = m.filter(pl.col("model") == "digits/resnet-s1").row(0, named=True)
    assert row["parameters"] == 135_434 and row["input_size"] == "1x32x32" and row["eps_stored"] == pytest.approx(25 / 255)
    assert row["weights_id"].startswith("sha256:") and 0 < row["clean_accuracy"] <= 1 and row["cluster"] >= 1
    assert not (out / "tsne.png").exists() and any("t-SNE map skipped: 4 models" in n for n in res.notes)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary (apt-get install chromium; .ci/run installs it)")
def test_report_in_headless_chromium(real_study, tmp_path):
    from PIL import Image

    out, _ = real_study
    report = out / "report.html"
    url = report.resolve().as_uri()

    shot = tmp_path / "shot.png"
    netlog = tmp_path / "net.json"
    r = browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", f"--log-net-log={netlog}")
    assert shot.is_file(), r.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape[:2] == (3000, 1200)
    assert (rgb.min(axis=-1) < 200).mean() > 0.02 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100  # not blank
    top, bottom = heatmap_band(rgb)
    band = rgb[top:bottom]
    viridis_like = colourful(band) & (band[..., 1] > band[..., 0])  # teal/green/yellow cells
    purple = colourful(band) & (band[..., 2] > band[..., 1])
    assert viridis_like.sum() > 2000 and purple.sum() > 500, (viridis_like.sum(), purple.sum())
    grey = (np.abs(band - 217) <= 6).all(axis=-1)  # the diagonal, #d9d9d9 between the hatching
    assert grey.sum() > 500
    assert set(page_requests(netlog)) <= {url}

    dom_text = browse(url, tmp_path, "--dump-dom").stdout
    dom = Dom(dom_text)
    assert set(SECTIONS) <= dom.ids("section"), dom.ids("section")
    assert len(dom.cell_titles()) == 16
    assert_self_contained_and_inert(dom)

    pdf = tmp_path / "print.pdf"
    browse(url, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert pdf.read_bytes().startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes())) >= 2


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary (apt-get install chromium; .ci/run installs it)")
def test_the_network_check_sees_a_request(tmp_path):
    """The net-log check is not vacuous: a page that loads an http image shows up in it."""
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><p>x</p></body></html>')
    netlog = tmp_path / "net.json"
    browse(page.resolve().as_uri(), tmp_path, "--dump-dom", f"--log-net-log={netlog}")
    assert "http://127.0.0.1:9/x.png" in page_requests(netlog)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary (apt-get install chromium; .ci/run installs it)")
def test_hostile_study_renders_inert_in_chromium(real_study, tmp_path):
    """A shared study whose files name a model `<script>...`: the browser shows the text, runs nothing."""
    out, _ = real_study
    evil = tmp_path / "evil"
    shutil.copytree(out, evil, ignore=shutil.ignore_patterns("attacks", "transfer", "logits"))
    victim = "digits/mixer-s1"
    for f in ("sat_long.csv", "clusters.csv", "models.csv"):
        df = pl.read_csv(evil / f)
        df = df.with_columns([pl.col(c).str.replace_all(victim, HOSTILE, literal=True) for c in df.columns if df[c].dtype == pl.String])
        df.write_csv(evil / f)
    text = (evil / "sat.csv").read_text()
    (evil / "sat.csv").write_text(text.replace(victim, '"' + HOSTILE.replace('"', '""') + '"'))
    st = json.loads((evil / "study.json").read_text())
    st["models"] = [HOSTILE if m == victim else m for m in st["models"]]
    (evil / "study.json").write_text(json.dumps(st))
    (evil / "approx-x.json").write_text(json.dumps({"model": HOSTILE, "joined": 1, "rows": [{"model": HOSTILE}]}))
    # the same shape a crafted sat_vs_err.png could take: an SVG with script, under a PNG name
    (evil / "sat_vs_err.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(4)"/>')
    report = write_report(evil, tmp_path / "evil.html")

    dom = Dom(browse(report.resolve().as_uri(), tmp_path, "--dump-dom").stdout)
    assert set(SECTIONS) <= dom.ids("section")
    assert_self_contained_and_inert(dom)
    assert any(HOSTILE in t for t in dom.cell_titles())
