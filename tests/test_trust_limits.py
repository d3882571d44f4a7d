"""No unbounded wait or work from the environment or a settings file (issue 20 §4, issue 23 §3).

- Pretrained weights: a hub endpoint that accepts connections and never answers (a
  local socket server built here), HF_HUB_OFFLINE with an empty cache, and a bad
  SATKIT_HUB_TIMEOUT each end with exit 2 and one line saying what to do. These
  tests never reach the real network: HF_HOME and TORCH_HOME are temporary
  folders and HF_ENDPOINT is the local server (which counts its connections).
- Size-like settings (canvas, steps, n, chunk, batch size, k, n_boot, permutations)
  have one range (satkit/limits.py), checked for the CLI, the library and a
  tampered study.json alike, before any work.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from satkit import limits
from satkit.errors import ModelError, ParameterError
from tests.cli_helpers import assert_clean_error, run

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ a hub that never answers


class SilentHub:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte.

    ``answer_root=True``: a ``HEAD /`` request (satkit's reachability probe) gets a 200;
    every other request (the downloads) waits forever, like a stalled transfer.
    """

    def __init__(self, answer_root: bool = False):
        self.answer_root = answer_root
        self.connections = 0
        self.requests: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            self.held.append(conn)  # kept open, never answered
            if self.answer_root:
                threading.Thread(target=self._maybe_answer, args=(conn,), daemon=True).start()

    def _maybe_answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            line = conn.recv(4096).decode("latin-1").split("\r\n", 1)[0]
            self.requests.append(line)
            if line.startswith("HEAD / "):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        for c in self.held:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


@pytest.fixture
def silent_hub():
    hub = SilentHub()
    yield hub
    hub.close()


@pytest.fixture
def stalling_hub():
    hub = SilentHub(answer_root=True)
    yield hub
    hub.close()


def hub_env(tmp_path: Path, endpoint: str, timeout: str | None = "2", offline: bool = False) -> dict[str, str]:
    """The environment of a satkit process that can only reach ``endpoint``, with empty caches."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "SATKIT_HUB_TIMEOUT"}
           and not k.lower().endswith("_proxy")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), TORCH_HOME=str(tmp_path / "torch-home"), HF_ENDPOINT=endpoint,
               NO_PROXY="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1")
    if timeout is not None:
        env["SATKIT_HUB_TIMEOUT"] = timeout
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def satkit(env: dict[str, str], *args) -> subprocess.CompletedProcess:
    """One real satkit process; the generous timeout only proves it ends (timings belong in benchmarks)."""
    return subprocess.run([sys.executable, "-m", "satkit", *map(str, args)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=240)


def assert_one_line(p: subprocess.CompletedProcess, *words: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    err = p.stderr.strip()
    assert err.startswith("satkit: error:") and len(err.splitlines()) == 1, err
    assert "Traceback" not in p.stdout + p.stderr
    for w in words:
        assert w in err, (w, err)
    return err


WHAT_TO_DO = ("HF_HUB_OFFLINE=1", "--random-init")


def test_a_hub_that_never_answers_ends_pretrained_timm_names(silent_hub, tmp_path):
    """`satkit attack resnet18` against an endpoint that accepts and never answers: one line, what to do."""
    env = hub_env(tmp_path, silent_hub.url)
    out = tmp_path / "adv.safetensors"
    err = assert_one_line(satkit(env, "attack", "resnet18", "-o", out),
                          "cannot be downloaded", "timm/resnet18.a1_in1k", "model.safetensors", "--arch resnet18",
                          str(tmp_path / "hf-home" / "hub" / "models--timm--resnet18.a1_in1k"),
                          silent_hub.url, "cannot be reached", *WHAT_TO_DO)
    assert "no answer within 2 s" in err
    assert silent_hub.connections >= 1  # the probe went to HF_ENDPOINT's own port
    assert not out.exists()


def test_a_hub_that_never_answers_ends_hub_names(silent_hub, tmp_path):
    env = hub_env(tmp_path, silent_hub.url)
    out = tmp_path / "adv.safetensors"
    assert_one_line(satkit(env, "attack", "hf-hub:timm/resnet18.a1_in1k", "-o", out),
                    "hf-hub:timm/resnet18.a1_in1k", "config.json", "model.safetensors", "--arch resnet18",
                    str(tmp_path / "hf-home" / "hub" / "models--timm--resnet18.a1_in1k"), silent_hub.url, *WHAT_TO_DO)
    assert silent_hub.connections >= 1 and not out.exists()


def test_a_download_that_stalls_is_bounded_by_satkit_hub_timeout(stalling_hub, tmp_path):
    """The endpoint answers the probe, then never sends a file: the whole download ends after SATKIT_HUB_TIMEOUT.

    `logits` has no early answer, so this goes through the library's loader (satkit.models.hub.create_timm_model).
    """
    env = hub_env(tmp_path, stalling_hub.url)
    out = tmp_path / "l.safetensors"
    err = assert_one_line(satkit(env, "logits", "resnet18", "-o", out),
                          "timm/resnet18.a1_in1k", "did not finish within 2 s (SATKIT_HUB_TIMEOUT)", *WHAT_TO_DO)
    assert stalling_hub.url in err
    assert any(r.startswith("HEAD / ") for r in stalling_hub.requests)
    assert any("resnet18.a1_in1k" in r for r in stalling_hub.requests), stalling_hub.requests  # it did ask for the file
    assert not out.exists()
    # and a hub name through `attack` (its early answer lets it through: the probe is answered)
    err = assert_one_line(satkit(env, "attack", "hf-hub:timm/resnet18.a1_in1k", "-o", out),
                          "hf-hub:timm/resnet18.a1_in1k", "did not finish within 2 s", *WHAT_TO_DO)
    assert not out.exists()


def test_offline_with_an_empty_cache_answers_without_the_network(silent_hub, tmp_path):
    """HF_HUB_OFFLINE=1, nothing cached: the answer is known, so no connection is even tried."""
    env = hub_env(tmp_path, silent_hub.url, timeout=None, offline=True)
    out = tmp_path / "adv.safetensors"
    for cmd in (["attack", "resnet50", "-o", out], ["logits", "resnet50", "-o", out]):
        assert_one_line(satkit(env, *cmd), "HF_HUB_OFFLINE is set", "timm/resnet50.a1_in1k", "model.safetensors",
                        str(tmp_path / "hf-home" / "hub" / "models--timm--resnet50.a1_in1k"),
                        "hf download timm/resnet50.a1_in1k model.safetensors", "--arch resnet50", *WHAT_TO_DO)
    assert_one_line(satkit(env, "attack", "hf-hub:someone/model", "-o", out), "models--someone--model", "--arch ARCH")
    assert silent_hub.connections == 0
    assert not out.exists()


def test_a_bad_hub_timeout_is_one_line(silent_hub, tmp_path):
    for value in ("soon", "0", "-5", "nan", "1e9"):
        env = hub_env(tmp_path, silent_hub.url, timeout=value, offline=True)
        assert_one_line(satkit(env, "attack", "resnet18", "-o", tmp_path / "a.safetensors"), "SATKIT_HUB_TIMEOUT", f"'{value}'")
    assert silent_hub.connections == 0


def test_cached_weights_need_no_network(tmp_path, monkeypatch):
    """Weights already in the cache (huggingface_hub's layout): the early answer lets them through, offline or not."""
    import huggingface_hub.constants as hc

    from satkit.models import hub

    cache = tmp_path / "hub"
    snap = cache / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    (snap / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    hub.early_answer("resnet18")  # cached: no error
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        hub.early_answer("resnet34")
    with pytest.raises(ModelError, match="config.json"):  # a hub name needs its config.json too
        hub.early_answer("hf-hub:timm/resnet18.a1_in1k")
    hub.early_answer("resnet34", pretrained=False)  # random init needs nothing
    hub.early_answer("resnet34", arch="resnet34")  # with --arch the spec is a file
    hub.early_answer("resnet_nope_42")  # unknown: the loader's own message says so


def test_the_weights_table_is_timms_answer():
    """satkit/models/timm_weights.py (for the torch-free early answer) equals what the installed timm says."""
    import timm

    from satkit.models import hub, timm_weights

    if timm.__version__ != timm_weights.TIMM_VERSION:
        pytest.skip(f"table made for timm {timm_weights.TIMM_VERSION}, installed {timm.__version__}: "
                    "the early answer is off (python scripts/make_timm_weights.py remakes it)")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_timm_weights
    finally:
        sys.path.pop(0)
    version, tags, other = make_timm_weights.table()
    assert (version, tags, other) == (timm_weights.TIMM_VERSION, timm_weights.TAGS, timm_weights.OTHER_SOURCE), \
        "run python scripts/make_timm_weights.py"
    for name in ("resnet18", "resnet50.a1_in1k", "vit_small_patch16_224", "gcvit_base", "cspnext_s", "legacy_seresnet18"):
        assert hub._table_weights(name) == hub.timm_weights(name), name


# ------------------------------------------------------------------ size-like settings: one range each


def test_every_range_is_used_and_documented():
    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    for r in limits.ALL:
        assert f"| `{r.flag}` | {r.name} | {r.low} | {r.high} | {r.unit} |" in guide, r


@pytest.mark.parametrize("r", limits.ALL, ids=[r.name for r in limits.ALL])
def test_range_bounds(r):
    assert r.check(r.low) == r.low and r.check(r.high) == r.high
    for bad in (r.low - 1, r.high + 1, 2.5, "7", True, None):
        with pytest.raises(ParameterError, match=re.escape(r.flag) + f".*{r.low} to {r.high}"):
            r.check(bad)


def test_library_calls_are_held_to_the_same_ranges():
    from satkit.attacks import AttackParams
    from satkit.data import DataRequest
    from satkit.models.batching import parse_batch_size

    with pytest.raises(ParameterError, match="--canvas"):
        DataRequest("digits", canvas=60000)
    with pytest.raises(ParameterError, match="--n "):
        DataRequest("digits", n=10**9)
    with pytest.raises(ParameterError, match="--chunk"):
        DataRequest("digits", chunk=(0, 10**7))
    with pytest.raises(ParameterError, match="--steps"):
        AttackParams(steps=10**9)
    with pytest.raises(ParameterError, match="--batch-size"):
        parse_batch_size(10**8)


def _tampered_study(tmp_path: Path, **changes) -> Path:
    """A study directory whose study.json (written by satkit) was edited afterwards."""
    from satkit.attacks import AttackParams
    from satkit.data import DataRequest
    from satkit.study.layout import StudyDir, StudySettings, write_settings

    d = tmp_path / "study"
    d.mkdir()
    st = StudySettings(models=("digits/resnet-s1", "digits/vit-s1"), data=DataRequest("digits", 30),
                       params=AttackParams(eps=0.1, steps=2), amp="off", eps_s=1.0, fingerprint="f" * 16)
    write_settings(StudyDir(d), st)
    s = json.loads((d / "study.json").read_text())
    for k, v in changes.items():
        if k == "steps":
            s["attack"]["steps"] = v
        else:
            s[k] = v
    (d / "study.json").write_text(json.dumps(s))
    return d


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, words", [
    ({"canvas": 60000}, ["canvas", "1 to 4096 px", "60000"]),
    ({"steps": 1000000000}, ["steps", "1 to 100000 iterations"]),
    ({"n": 10**12}, ["n", "1 to 10000000 images"]),
    ({"n": None, "chunk": [0, 10**9]}, ["chunk", "10 to 100000 images"]),
    ({"n": None, "chunk": [10**8, 100]}, ["chunk index", "0 to 1000000"]),
], ids=["canvas", "steps", "n", "chunk-size", "chunk-index"])
def test_tampered_study_sizes_are_refused_before_any_work(tmp_path, change, words):
    d = _tampered_study(tmp_path, **change)
    before = _snapshot(d)
    out = tmp_path / "approx.csv"
    r = run("approx", "digits/resnet-s2", "--study", d, "-o", out, ok=False)
    assert_clean_error(r, "study.json", *words)
    r = run("report", d, "-o", tmp_path / "report.html", ok=False)
    assert_clean_error(r, "study.json", *words)
    assert _snapshot(d) == before  # nothing written into the study
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # no output, no partial
