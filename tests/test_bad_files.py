"""Damaged, edited and crafted satkit files through the CLI: each must give ONE line naming the
problem, exit 2, no traceback, and no output file created or overwritten (as tests/test_bad_inputs.py)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from satkit.cli.app import app
from satkit.io.pixels import eps_steps_uint8
from satkit.io.tensorfile import write_tensor_file
from tests.cli_helpers import run_bad_case
from tests.test_verify import rewrite

runner = CliRunner()


def _run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.exit_code, r.stderr)


def _beyond_eps(t, eps):
    k = eps_steps_uint8(eps)
    clean, adv = t["clean"], t["adv"].clone()
    i = int(torch.nonzero(clean.flatten() <= 255 - (k + 1))[0])
    adv.view(-1)[i] = clean.view(-1)[i] + k + 1
    t["adv"] = adv


def _swap_rows(t):
    j = next(j for j in range(1, len(t["clean"])) if not torch.equal(t["clean"][0], t["clean"][j]))
    for name in ("clean", "adv"):
        x = t[name].clone()
        x[[0, j]] = x[[j, 0]]
        t[name] = x


def _put(name, fn):
    def edit(t):
        t[name] = fn(t[name].clone())

    return edit


def _at(index, value):
    def fn(x):
        x[index] = value
        return x

    return fn


def _as_float16(t):
    for name in ("clean", "adv"):
        t[name] = (t[name].to(torch.float32) / 255.0).to(torch.float16)


def _storage(dtype):
    def edit(p):
        p["storage_dtype"] = p["attack"]["storage"] = dtype

    return edit


def _rows(start, stop):
    def edit(t):
        for name in list(t):
            t[name] = t[name][start:stop].clone()

    return edit


def _shard(i, start, stop):
    def edit(p):
        p["shard"] = {"index": i, "count": 2, "start": start, "stop": stop, "n_total": 20}

    return edit


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_files")
    a = d / "adv.safetensors"
    _run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", a)
    # the other good files are cut from this one (one attack run keeps the module fast): the
    # float16 copy holds k/255 as float16 storage does, the shards are rows 0..8 and 8..20
    rewrite(a, d / "adv_f16.safetensors", _as_float16, _storage("float16"))
    for i, (start, stop) in enumerate(((0, 8), (8, 20))):
        rewrite(a, d / f"shard{i}.safetensors", _rows(start, stop), _shard(i, start, stop))
    rewrite(d / "shard1.safetensors", d / "shard1_swapped.safetensors", _swap_rows)
    eps = 0.1  # the digits default; checked below against the file
    edits = {
        "beyond_eps": (lambda t: _beyond_eps(t, eps), None),
        "eps_smaller": (None, lambda p: p["attack"].update(eps=eps / 4)),
        "labels_negative": (_put("labels", _at(4, -1)), None),
        "source_correct_two": (_put("source_correct", lambda x: _at(0, 2)(x.to(torch.uint8))), None),
        "duplicate_ids": (_put("ids", lambda x: _at(1, int(x[0]))(x)), None),
        "short_ids": (_put("ids", lambda x: x[:-1]), None),
        "long_flags": (_put("source_adv_correct", lambda x: torch.cat([x, x[:3]])), None),
        "short_adv": (_put("adv", lambda x: x[:-2]), None),
        "swapped": (_swap_rows, None),
        "nan_logits": (_put("clean_logits", _at((2, 3), float("nan"))), None),
        "prov_list": (None, lambda p: [p]),
        "model_number": (None, lambda p: p.update(model=5)),
        "data_string": (None, lambda p: p.update(data="x")),
        "shard_empty": (None, lambda p: p.update(shard={})),
    }
    for name, (tensors, prov) in edits.items():
        rewrite(a, d / f"{name}.safetensors", tensors, prov)
    rewrite(d / "adv_f16.safetensors", d / "f16_outside.safetensors", _put("adv", _at((0, 0, 0, 0), 1.5)))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    for name, logits in (("l_ok", torch.randn(6, 10)), ("l_nan", torch.full((6, 10), float("nan")))):
        write_tensor_file(d / f"{name}.safetensors", "satkit.logits", {"logits": logits, "labels": labels, "ids": torch.arange(6)},
                          {"command": "logits", "model": {"name": name}, "data": {"fingerprint": "f"}})
    images = torch.rand(6, 1, 16, 16)
    images[0, 0, 0, 0] = float("nan")
    write_tensor_file(d / "data_nan.safetensors", "satkit.data", {"images": images, "labels": labels}, {"num_classes": 10})
    from satkit.formats import read_satkit_file

    assert read_satkit_file(a, "satkit.attack").provenance["attack"]["eps"] == eps
    for good in ("adv_f16", "shard0", "shard1"):  # the cut files are sound: each case fails for its own defect
        read_satkit_file(d / f"{good}.safetensors", "satkit.attack")
    return d


# (id, args (with {d} for the workspace), words the message must contain)
CASES = [
    ("transfer-adv-beyond-eps", ["transfer", "digits/resnet-s1", "{d}/beyond_eps.safetensors", "-o", "{out}.csv"], ["beyond_eps.safetensors", "more than eps"]),
    ("transfer-adv-outside-unit-float16", ["transfer", "digits/resnet-s1", "{d}/f16_outside.safetensors", "-o", "{out}.csv"], ["'adv'", "outside [0, 1]"]),
    ("transfer-eps-edited-smaller", ["transfer", "digits/resnet-s1", "{d}/eps_smaller.safetensors", "-o", "{out}.csv"], ["more than eps"]),
    ("transfer-labels-negative", ["transfer", "digits/resnet-s1", "{d}/labels_negative.safetensors", "-o", "{out}.csv"], ["labels", "-1"]),
    ("transfer-source-correct-uint8-two", ["transfer", "digits/resnet-s1", "{d}/source_correct_two.safetensors", "-o", "{out}.csv"],
     ["'source_correct'", "expected bool"]),
    ("transfer-duplicate-ids", ["transfer", "digits/resnet-s1", "{d}/duplicate_ids.safetensors", "-o", "{out}.csv"], ["ids", "not unique"]),
    ("transfer-short-ids", ["transfer", "digits/resnet-s1", "{d}/short_ids.safetensors", "-o", "{out}.csv"], ["'ids'", "19 rows"]),
    ("transfer-mismatched-lengths", ["transfer", "digits/resnet-s1", "{d}/long_flags.safetensors", "-o", "{out}.csv"], ["'source_adv_correct'", "23 rows"]),
    ("transfer-adv-short", ["transfer", "digits/resnet-s1", "{d}/short_adv.safetensors", "-o", "{out}.csv"], ["'adv'", "shape"]),
    ("transfer-swapped-clean-images", ["transfer", "digits/resnet-s1", "{d}/swapped.safetensors", "-o", "{out}.csv"], ["fingerprint"]),
    ("transfer-nan-clean-logits", ["transfer", "digits/resnet-s1", "{d}/nan_logits.safetensors", "-o", "{out}.csv"], ["'clean_logits'", "NaN"]),
    ("transfer-provenance-list", ["transfer", "digits/resnet-s1", "{d}/prov_list.safetensors", "-o", "{out}.csv"], ["provenance is malformed"]),
    ("transfer-provenance-model-number", ["transfer", "digits/resnet-s1", "{d}/model_number.safetensors", "-o", "{out}.csv"], ["(field model)"]),
    ("transfer-provenance-data-string", ["transfer", "digits/resnet-s1", "{d}/data_string.safetensors", "-o", "{out}.csv"], ["(field data)"]),
    ("transfer-shard-entry-emptied", ["transfer", "digits/resnet-s1", "{d}/shard_empty.safetensors", "-o", "{out}.csv"], ["(field shard.index)"]),
    ("transfer-one-bad-among-good", ["transfer", "digits/resnet-s1", "{d}/adv.safetensors", "{d}/swapped.safetensors", "-o", "{out}.csv"],
     ["swapped.safetensors", "fingerprint"]),
    ("info-provenance-list", ["info", "{d}/prov_list.safetensors"], ["provenance is malformed"]),
    ("info-provenance-model-number", ["info", "{d}/model_number.safetensors"], ["(field model)"]),
    ("info-provenance-data-string", ["info", "{d}/data_string.safetensors"], ["(field data)"]),
    ("info-adv-beyond-eps", ["info", "{d}/beyond_eps.safetensors"], ["more than eps"]),
    ("info-swapped-clean-images", ["info", "{d}/swapped.safetensors"], ["fingerprint"]),
    ("info-json-duplicate-ids", ["info", "{d}/duplicate_ids.safetensors", "--json"], ["not unique"]),
    ("matrix-given-attack-file", ["matrix", "{d}/beyond_eps.safetensors", "-o", "{out}.csv"], ["beyond_eps.safetensors", "transfer table"]),
    ("merge-tampered-shard", ["merge", "{d}/shard0.safetensors", "{d}/shard1_swapped.safetensors", "-o", "{out}.safetensors"], ["fingerprint", "--shard"]),
    ("ensemble-nan-logits", ["ensemble", "{d}/l_ok.safetensors", "{d}/l_nan.safetensors", "-o", "{out}.csv"], ["l_nan.safetensors", "NaN"]),
    ("attack-data-file-nan", ["attack", "digits/resnet-s1", "--data", "{d}/data_nan.safetensors", "-o", "{out}.safetensors"], ["'images'", "NaN"]),
    ("logits-data-from-edited-attack", ["logits", "digits/resnet-s1", "--data", "{d}/swapped.safetensors", "-o", "{out}.safetensors"], ["fingerprint"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_file(ws, tmp_path, case):
    run_bad_case(case, ws, tmp_path)
