"""Files are checked against themselves when opened: each defect is a one-line error naming it.

Broken files are made from real attack files by rewriting their tensors or
provenance the way a damaged copy, a hand edit or a crafted file would.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from satkit.errors import DataError, InputFileError, SatkitError
from satkit.formats import read_satkit_file, verify_file
from satkit.io.pixels import eps_steps_uint8
from satkit.io.tensorfile import write_tensor_file
from tests.cli_helpers import run


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "-o", d / "a.safetensors")
    run("attack", "digits/resnet-s1", "--n", 20, "--steps", 1, "--storage", "float16", "-o", d / "h.safetensors")
    return d


def rewrite(src, dst, tensors=None, prov=None):
    """Copy of ``src`` with ``tensors(dict)`` / ``prov(dict)`` applied; a ``prov`` edit may return a replacement."""
    t = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    p = json.loads(meta["provenance"])
    if tensors:
        tensors(t)
    if prov:
        out = prov(p)
        p = p if out is None else out
    meta["provenance"] = json.dumps(p)
    save_file({k: v.contiguous() for k, v in t.items()}, str(dst), metadata=meta)
    return dst


def refused(path, *words, fmt="satkit.attack", kind=InputFileError):
    with pytest.raises(kind) as e:
        read_satkit_file(path, fmt)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _set(name, fn):
    def edit(t):
        t[name] = fn(t[name].clone())

    return edit


# ------------------------------------------------------------------ intact files


def test_untouched_files_verify(ws):
    for name in ("a", "h"):
        f = read_satkit_file(ws / f"{name}.safetensors", "satkit.attack")
        verify_file(f)  # explicit, too
    assert read_satkit_file(ws / "h.safetensors", "satkit.attack").get("clean").dtype == torch.float16


def test_peek_without_verify(ws, tmp_path):
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=lambda p: p["attack"].update(eps=0.0))
    assert read_satkit_file(p, "satkit.attack", verify=False).provenance["attack"]["eps"] == 0.0
    refused(p, "eps")


# ------------------------------------------------------------------ pixels and the eps bound


def test_adv_beyond_eps_by_one_step(ws, tmp_path):
    eps = read_satkit_file(ws / "a.safetensors", "satkit.attack").provenance["attack"]["eps"]
    k = eps_steps_uint8(eps)

    def edit(t):
        clean, adv = t["clean"], t["adv"].clone()
        i = int(torch.nonzero(clean.flatten() <= 255 - (k + 1))[0])
        adv.view(-1)[i] = clean.view(-1)[i] + k + 1
        t["adv"] = adv

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", edit), "'adv'", f"{k + 1}/255", "more than eps")


def test_adv_outside_unit_range_float16(ws, tmp_path):
    def edit(adv):
        adv[0, 0, 0, 0] = 1.5
        return adv

    refused(rewrite(ws / "h.safetensors", tmp_path / "x.safetensors", _set("adv", edit)), "'adv'", "outside [0, 1]")


def test_adv_nan_float16(ws, tmp_path):
    def edit(adv):
        adv[3, 0, 5, 5] = float("nan")
        return adv

    refused(rewrite(ws / "h.safetensors", tmp_path / "x.safetensors", _set("adv", edit)), "'adv'", "NaN")


def test_float16_adv_beyond_eps(ws, tmp_path):
    eps = read_satkit_file(ws / "h.safetensors", "satkit.attack").provenance["attack"]["eps"]

    def edit(t):
        t["adv"] = (t["clean"].to(torch.float64) + eps + 0.01).clamp(0, 1).to(torch.float16)

    refused(rewrite(ws / "h.safetensors", tmp_path / "x.safetensors", edit), "more than eps")


def test_eps_edited_smaller(ws, tmp_path):
    a = read_satkit_file(ws / "a.safetensors", "satkit.attack")
    eps = a.provenance["attack"]["eps"]
    moved = int((a.get("adv").to(torch.int16) - a.get("clean").to(torch.int16)).abs().max())
    assert moved > eps_steps_uint8(eps / 4)  # the file really uses more than the edited budget
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=lambda p: p["attack"].update(eps=eps / 4))
    refused(p, "more than eps")


def test_float_clean_not_8bit(ws, tmp_path):
    def edit(clean):
        clean[0, 0, 0, 0] = 0.3  # no k/255 is 0.3 in float16
        return clean

    refused(rewrite(ws / "h.safetensors", tmp_path / "x.safetensors", _set("clean", edit)), "'clean'", "k/255")


# ------------------------------------------------------------------ labels, ids, flags


def test_labels_negative(ws, tmp_path):
    def edit(labels):
        labels[4] = -1
        return labels

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("labels", edit)), "labels", "[0, 10)", "-1")


def test_labels_beyond_classes(ws, tmp_path):
    def edit(labels):
        labels[0] = 10
        return labels

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("labels", edit)), "labels", "found 10")


def test_source_correct_uint8_holding_two(ws, tmp_path):
    def edit(sc):
        out = sc.to(torch.uint8)
        out[0] = 2
        return out

    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("source_correct", edit))
    refused(p, "'source_correct'", "uint8", "expected bool")


def test_bool_tensor_with_byte_two(ws, tmp_path):
    def edit(sc):
        raw = sc.to(torch.uint8)
        raw[1] = 2
        return raw.view(torch.bool)

    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("source_adv_correct", edit))
    refused(p, "'source_adv_correct'", "other than 0 and 1")


def test_source_correct_disagrees_with_logits(ws, tmp_path):
    def edit(t):
        sc, logits = t["source_correct"].clone(), t["clean_logits"]
        top2 = logits.topk(2, dim=1).values
        i = int(torch.nonzero(top2[:, 0] > top2[:, 1])[0])  # a sample without a tie at the top
        sc[i] = ~sc[i]
        t["source_correct"] = sc

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", edit), "'source_correct'", "disagrees", "1 sample")


def test_duplicate_ids(ws, tmp_path):
    def edit(ids):
        ids[1] = ids[0]
        return ids

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("ids", edit)), "ids", "not unique")


def test_short_ids(ws, tmp_path):
    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("ids", lambda x: x[:-1])),
            "'ids'", "19 rows", "20")


def test_mismatched_lengths(ws, tmp_path):
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("source_adv_correct", lambda x: torch.cat([x, x[:3]])))
    refused(p, "'source_adv_correct'", "23 rows")
    p = rewrite(ws / "a.safetensors", tmp_path / "y.safetensors", _set("adv", lambda x: x[:-2]))
    refused(p, "'adv'", "shape", "[18, 1, 16, 16]")


def test_missing_tensor(ws, tmp_path):
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", lambda t: t.pop("source_adv_correct"))
    refused(p, "'source_adv_correct'", "missing")


def test_fingerprint_after_swapping_two_clean_images(ws, tmp_path):
    def edit(t):
        clean = t["clean"]
        j = next(j for j in range(1, len(clean)) if not torch.equal(clean[0], clean[j]))
        for name in ("clean", "adv"):  # adv moves with its image, so only the fingerprint can tell
            x = t[name].clone()
            x[[0, j]] = x[[j, 0]]
            t[name] = x

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", edit), "fingerprint")


def test_nan_in_clean_logits(ws, tmp_path):
    def edit(logits):
        logits[2, 3] = float("nan")
        return logits

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("clean_logits", edit)), "'clean_logits'", "NaN")


# ------------------------------------------------------------------ provenance shape


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda p: [p], ["provenance is malformed"]),
        (lambda p: p.update(model=5), ["provenance is malformed (field model)"]),
        (lambda p: p.update(data="x"), ["provenance is malformed (field data)"]),
        (lambda p: p["model"].update(name=7), ["(field model.name)"]),
        (lambda p: p["model"].__delitem__("weights_id"), ["(field model.weights_id)"]),
        (lambda p: p["data"].update(fingerprint=None), ["(field data.fingerprint)"]),
        (lambda p: p["data"].update(num_classes=0), ["(field data.num_classes)"]),
        (lambda p: p["attack"].update(eps="0.1"), ["(field attack.eps)"]),
        (lambda p: p["attack"].update(eps=float("nan")), ["(field attack.eps)"]),
        (lambda p: p["attack"].update(eps=1.5), ["(field attack.eps)"]),
        (lambda p: p["attack"].update(steps=True), ["(field attack.steps)"]),
        (lambda p: p.update(storage_dtype="int8"), ["(field storage_dtype)"]),
        (lambda p: p.update(shard={}), ["(field shard.index)"]),
        (lambda p: p.update(shard=None), ["(field shard)"]),
    ],
    ids=["list", "model-number", "data-string", "name-number", "no-weights-id", "no-fingerprint", "zero-classes",
         "eps-string", "eps-nan", "eps-above-one", "steps-bool", "storage-unknown", "shard-empty", "shard-null"],
)
def test_malformed_provenance(ws, tmp_path, edit, words):
    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=edit), *words)


def test_provenance_list_refused_even_when_peeking(ws, tmp_path):
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=lambda p: [p])
    with pytest.raises(InputFileError, match="not a JSON object"):
        read_satkit_file(p, "satkit.attack", verify=False)


def test_storage_dtype_edited(ws, tmp_path):
    def edit(p):
        p["storage_dtype"] = p["attack"]["storage"] = "float16"

    refused(rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=edit), "'clean' is uint8, expected float16")


# ------------------------------------------------------------------ shards


def test_shard_rows_must_match(ws, tmp_path):
    shard = {"index": 0, "count": 2, "start": 0, "stop": 8, "n_total": 20}
    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", prov=lambda p: p.update(shard=shard))
    refused(p, "shard rows 0..8", "20 images")
    whole = {"index": 0, "count": 1, "start": 0, "stop": 20, "n_total": 20}
    ok = rewrite(ws / "a.safetensors", tmp_path / "y.safetensors", prov=lambda p: p.update(shard=whole))
    read_satkit_file(ok, "satkit.attack")  # a shard is checked without the whole-set fingerprint


def test_joined_tensors_checked_against_fingerprint(ws):
    f = read_satkit_file(ws / "a.safetensors", "satkit.attack")
    tensors = {k: f.get(k) for k in f.keys}
    f.header.verify(tensors, "joined")
    tensors["ids"] = tensors["ids"].flip(0)
    with pytest.raises(InputFileError, match="^joined: .*fingerprint.*; remake the shards") as e:
        f.header.verify(tensors, "joined", todo="remake the shards")
    assert len(str(e.value).splitlines()) == 1


# ------------------------------------------------------------------ logits and data files


def _logits_file(path, **over):
    t = {"logits": torch.randn(6, 4), "labels": torch.tensor([0, 1, 2, 3, 0, 1]), "ids": torch.arange(6),
         "clean": torch.zeros(6, 1, 4, 4, dtype=torch.uint8)}
    t.update(over)
    write_tensor_file(path, "satkit.logits", t, {"command": "logits", "model": {"name": "m"}, "data": {"fingerprint": "f"}})
    return path


def test_logits_file_checks(tmp_path):
    read_satkit_file(_logits_file(tmp_path / "ok.safetensors"), "satkit.logits")
    nan = torch.randn(6, 4)
    nan[1, 1] = float("inf")
    refused(_logits_file(tmp_path / "a.safetensors", logits=nan), "'logits'", "NaN/inf", fmt="satkit.logits")
    refused(_logits_file(tmp_path / "b.safetensors", labels=torch.tensor([0, 1, 2, 4, 0, 1])), "[0, 4)", fmt="satkit.logits")
    refused(_logits_file(tmp_path / "c.safetensors", ids=torch.tensor([0, 1, 2, 3, 4, 4])), "not unique", fmt="satkit.logits")
    refused(_logits_file(tmp_path / "d.safetensors", ids=torch.arange(5)), "'ids'", "5 rows", fmt="satkit.logits")
    refused(_logits_file(tmp_path / "e.safetensors", labels=torch.tensor([0, 1, 2, 3, 0, 1], dtype=torch.int32)),
            "'labels' is int32", fmt="satkit.logits")
    refused(_logits_file(tmp_path / "f.safetensors", clean=torch.full((6, 1, 4, 4), 2.0)), "'clean'", "[0, 1]", fmt="satkit.logits")


def test_logits_provenance_shape(tmp_path):
    p = _logits_file(tmp_path / "ok.safetensors")
    for edit, field in ((lambda p: p.update(model="m"), "model"), (lambda p: p["data"].__delitem__("fingerprint"), "data.fingerprint")):
        refused(rewrite(p, tmp_path / "x.safetensors", prov=edit), f"(field {field})", fmt="satkit.logits")


def _data_file(path, images, labels, ids=None, prov=None):
    t = {"images": images, "labels": labels}
    if ids is not None:
        t["ids"] = ids
    write_tensor_file(path, "satkit.data", t, prov or {"num_classes": 2})
    return str(path)


def test_data_file_checks(tmp_path):
    from satkit.data import load_data

    imgs = torch.rand(4, 1, 4, 4)
    labels = torch.tensor([0, 1, 0, 1])
    assert len(load_data(_data_file(tmp_path / "ok.safetensors", imgs, labels))) == 4
    nan = imgs.clone()
    nan[0, 0, 0, 0] = float("nan")  # used to become pixel 0 silently
    cases = [
        (_data_file(tmp_path / "a.safetensors", nan, labels), ["'images'", "NaN"]),
        (_data_file(tmp_path / "b.safetensors", imgs * 2, labels), ["'images'", "outside [0, 1]"]),
        (_data_file(tmp_path / "c.safetensors", imgs, torch.tensor([0, -1, 0, 1])), ["labels", "-1"]),
        (_data_file(tmp_path / "d.safetensors", imgs, torch.tensor([0, 1, 0, 2])), ["[0, 2)"]),
        (_data_file(tmp_path / "e.safetensors", imgs, labels.float()), ["'labels' is float32"]),
        (_data_file(tmp_path / "f.safetensors", imgs, labels, ids=torch.tensor([5, 6, 5, 7])), ["not unique"]),
        (_data_file(tmp_path / "g.safetensors", imgs, labels, prov={"data": "x"}), ["(field data)"]),
    ]
    for path, words in cases:
        with pytest.raises(DataError) as e:
            load_data(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and len(msg.splitlines()) == 1, msg
        for w in words:
            assert w in msg, (w, msg)


def test_attack_file_as_data_is_verified(ws, tmp_path):
    from satkit.data import load_data

    p = rewrite(ws / "a.safetensors", tmp_path / "x.safetensors", _set("ids", lambda x: x[:-1]))
    with pytest.raises(SatkitError, match="19 rows"):
        load_data(str(p))
