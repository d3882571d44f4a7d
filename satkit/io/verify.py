"""Check a satkit tensor file against itself before anything uses it.

Every number satkit reports is computed from files; a file that was damaged,
edited by hand or crafted must be a one-line error, never a wrong number. The
checks here need no model: one pass over the tensors (memory-mapped, in row
chunks) checks what the writer guarantees on the stored values:

- provenance fields that later code reads have the right types and ranges;
- the required tensors are present with the documented dtypes and shapes;
- ids are unique, labels lie in [0, classes);
- float pixels are finite and in [0, 1]; adversarial pixels stay within eps
  of the clean ones, exactly as the attack stored them;
- the clean-set fingerprint recomputed from the stored pixels, labels and ids
  equals the recorded one (except for a shard, whose fingerprint names the
  whole set; merging checks it on the joined tensors);
- ``source_correct`` agrees with the stored clean logits it was computed from.

:func:`satkit.io.tensorfile.read_satkit_file` runs :func:`verify_file` on every
read unless the caller only peeks at provenance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from satkit.errors import DataError, InputFileError, SatkitError
from satkit.io.fingerprint import Fingerprinter
from satkit.io.pixels import STORAGE_DTYPES, eps_steps_uint8

if TYPE_CHECKING:
    from satkit.io.tensorfile import SatkitFile

# Rows of clean/adv pixels read per step: bounds the verifier's memory on ImageNet-sized files.
_CHUNK_BYTES = 32 << 20

# safetensors' dtype names as torch dtypes (header dtypes are read without loading tensors)
_ST_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def verify_file(f: SatkitFile) -> None:
    """Run the verifier of ``f``'s format; raises a one-line :class:`SatkitError` on the first defect."""
    VERIFIERS[f.format](f)


def verify_attack(f: SatkitFile) -> None:
    """Check a ``satkit.attack`` file (see the module docstring); no model is run."""
    with _file_tensors(f) as t:
        _check_attack(t, f.provenance, _Fail(str(f.path), InputFileError, "remake it with `satkit attack`"))


def verify_attack_tensors(
    tensors: Mapping[str, torch.Tensor], provenance: Any, where: str, todo: str = "remake it with `satkit attack`"
) -> None:
    """The attack-file checks on tensors in memory (e.g. shards joined before writing).

    ``where`` and ``todo`` make the error line: ``WHERE: what is wrong; TODO``.
    """
    _check_attack(_DictTensors(tensors), provenance, _Fail(where, InputFileError, todo))


def verify_logits(f: SatkitFile) -> None:
    """Check a ``satkit.logits`` file: provenance, dtypes/shapes, finite logits, labels in range, unique ids, pixels."""
    with _file_tensors(f) as t:
        _check_logits(t, f.provenance, _Fail(str(f.path), InputFileError, "remake it with `satkit logits`"))


# what a data file must hold, for the message about a plain safetensors file that does not
_DATA_TENSORS = "a data file holds 'images' (N, C, H, W; uint8, or float in [0, 1]), 'labels' (N,) and optionally 'ids' (N,)"


def verify_data(f: SatkitFile) -> None:
    """Check a ``satkit.data`` file: images uint8 or finite float in [0, 1], labels integers >= 0, unique ids."""
    todo = _DATA_TENSORS if f.plain else "rewrite the data file"
    with _file_tensors(f) as t:
        if f.plain:
            absent = [k for k in ("images", "labels") if not t.has(k)]
            if absent:
                held = ", ".join(sorted(f.keys)[:5]) + (", ..." if len(f.keys) > 5 else "") or "no tensors"
                raise DataError(f"{f.path}: a safetensors file without satkit metadata, read as a data file, but "
                                f"tensor '{absent[0]}' is missing (it holds {held}); {_DATA_TENSORS}")
        _check_data(t, f.provenance, _Fail(str(f.path), DataError, todo))


VERIFIERS: dict[str, Callable[[SatkitFile], None]] = {
    "satkit.attack": verify_attack,
    "satkit.logits": verify_logits,
    "satkit.data": verify_data,
}


# ------------------------------------------------------------------ errors


class _Fail:
    """Builds the one-line error of one file: ``WHERE: what is wrong; what to do``."""

    def __init__(self, where: str, kind: type[SatkitError], todo: str):
        self.where, self.kind, self.todo = where, kind, todo

    def __call__(self, what: str) -> SatkitError:
        return self.kind(f"{self.where}: {what}; {self.todo}")

    def field(self, name: str) -> SatkitError:
        return self(f"provenance is malformed (field {name})")


# ------------------------------------------------------------------ tensor access


class _DictTensors:
    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = tensors

    def has(self, name: str) -> bool:
        return name in self._t

    def dtype(self, name: str) -> torch.dtype | str:
        return self._t[name].dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._t[name].shape)

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]

    def rows(self, name: str, a: int, b: int) -> torch.Tensor:
        return self._t[name][a:b]


class _FileTensors:
    """Header dtypes/shapes without loading; tensors and row ranges from one open memory map."""

    def __init__(self, f: SatkitFile, sf: Any):
        self._f, self._sf = f, sf

    def has(self, name: str) -> bool:
        return name in self._f.keys

    def dtype(self, name: str) -> torch.dtype | str:
        raw = self._sf.get_slice(name).get_dtype()
        return _ST_DTYPES.get(raw, raw)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._sf.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._read(lambda: self._sf.get_tensor(name), name)

    def rows(self, name: str, a: int, b: int) -> torch.Tensor:
        return self._read(lambda: self._sf.get_slice(name)[a:b], name)

    def _read(self, fn: Callable[[], torch.Tensor], name: str) -> torch.Tensor:
        try:
            return fn()
        except Exception as e:  # safetensors raises its own error types
            msg = " ".join(str(e).split())[:200]
            raise InputFileError(f"{self._f.path}: cannot read tensor '{name}' ({msg}); the file is damaged") from None


@contextmanager
def _file_tensors(f: SatkitFile) -> Iterator[_FileTensors]:
    from safetensors import safe_open

    try:
        sf = safe_open(str(f.path), framework="pt")
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise InputFileError(f"{f.path}: not a readable safetensors file ({msg}); it may be truncated") from None
    with sf:
        yield _FileTensors(f, sf)


def _dtype_name(dt: torch.dtype | str) -> str:
    return str(dt).replace("torch.", "")


# ------------------------------------------------------------------ provenance fields


def _section(prov: Any, key: str, fail: _Fail) -> dict[str, Any]:
    v = prov.get(key)
    if not isinstance(v, dict):
        raise fail.field(key)
    return v


def _str(d: dict[str, Any], key: str, name: str, fail: _Fail) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise fail.field(name)
    return v


def _int(d: dict[str, Any], key: str, name: str, fail: _Fail, lo: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise fail.field(name)
    return v


def _optional_classes(d: dict[str, Any], name: str, fail: _Fail) -> int | None:
    return _int(d, "num_classes", name, fail, 1) if "num_classes" in d else None


# ------------------------------------------------------------------ shared tensor checks


def _require(t: Any, names: tuple[str, ...], fail: _Fail) -> None:
    for name in names:
        if not t.has(name):
            raise fail(f"tensor '{name}' is missing; the file is incomplete")


def _expect_dtype(t: Any, name: str, want: tuple[torch.dtype, ...], fail: _Fail) -> torch.dtype:
    dt = t.dtype(name)
    if dt not in want:
        raise fail(f"tensor '{name}' is {_dtype_name(dt)}, expected {' or '.join(_dtype_name(w) for w in want)}")
    return dt  # type: ignore[return-value]


def _expect_rows(t: Any, names: tuple[str, ...], n: int, fail: _Fail) -> None:
    """Each tensor is 1-D with ``n`` rows."""
    for name in names:
        shape = t.shape(name)
        if len(shape) != 1:
            raise fail(f"tensor '{name}' has shape {list(shape)}, expected ({n},)")
        if shape[0] != n:
            raise fail(f"tensor '{name}' has {shape[0]} rows but the images have {n}")


def _images_shape(t: Any, name: str, fail: _Fail) -> tuple[int, ...]:
    shape = t.shape(name)
    if len(shape) != 4:
        raise fail(f"tensor '{name}' has shape {list(shape)}, expected (N, C, H, W)")
    if shape[0] < 1:
        raise fail(f"tensor '{name}' holds no images")
    return shape


def _check_ids(ids: torch.Tensor, fail: _Fail) -> None:
    uniq, counts = torch.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        raise fail(f"ids are not unique (id {int(uniq[counts > 1][0])} appears {int(counts.max())} times)")


def _check_labels(labels: torch.Tensor, classes: int | None, fail: _Fail) -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (classes is not None and hi >= classes):
        bad = lo if lo < 0 else hi
        rng = f"[0, {classes})" if classes is not None else ">= 0"
        raise fail(f"labels must lie in {rng}, found {bad}")


def _check_bool(t: Any, name: str, fail: _Fail) -> torch.Tensor:
    _expect_dtype(t, name, (torch.bool,), fail)
    v = t.get(name)
    # a bool tensor's bytes are read as they are: a byte 2 would act as True in some ops and not in others
    if len(v) and int(v.view(torch.uint8).max()) > 1:
        raise fail(f"tensor '{name}' holds values other than 0 and 1")
    return v


def _in_unit_range(x: torch.Tensor) -> bool:
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(lo >= 0) and bool(hi <= 1)  # aminmax propagates NaN, which fails both comparisons


def _chunks(n: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, _CHUNK_BYTES // max(1, row_bytes))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def _row_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()


def _check_float_images(t: Any, name: str, shape: tuple[int, ...], dtype: torch.dtype, fail: _Fail) -> None:
    for a, b in _chunks(shape[0], _row_bytes(shape, dtype)):
        if not _in_unit_range(t.rows(name, a, b)):
            raise fail(f"tensor '{name}' has pixels that are NaN/inf or outside [0, 1]")


# ------------------------------------------------------------------ satkit.attack


def _attack_provenance(prov: Any, fail: _Fail) -> dict[str, Any]:
    if not isinstance(prov, dict):
        raise fail.field("provenance")
    model = _section(prov, "model", fail)
    _str(model, "name", "model.name", fail)
    _str(model, "weights_id", "model.weights_id", fail)
    data = _section(prov, "data", fail)
    _str(data, "fingerprint", "data.fingerprint", fail)
    classes = _int(data, "num_classes", "data.num_classes", fail, 1)
    attack = _section(prov, "attack", fail)
    eps = attack.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 <= eps <= 1:
        raise fail.field("attack.eps")
    _int(attack, "steps", "attack.steps", fail, 1)
    storage = prov.get("storage_dtype", attack.get("storage"))
    if not isinstance(storage, str) or storage not in STORAGE_DTYPES:
        raise fail.field("storage_dtype")
    if "storage" in attack and attack["storage"] != storage:
        raise fail.field("attack.storage")
    if "attack_key" in prov and not isinstance(prov["attack_key"], str):
        raise fail.field("attack_key")
    shard = None
    if "shard" in prov:  # present at all means a shard: an emptied entry must not pass as a whole file
        shard = _section(prov, "shard", fail)
        for k in ("index", "count", "start", "stop", "n_total"):
            _int(shard, k, f"shard.{k}", fail, 0)
        if not shard["index"] < shard["count"]:
            raise fail.field("shard.index")
        if not shard["start"] < shard["stop"] <= shard["n_total"]:
            raise fail.field("shard.stop")
    return {"eps": float(eps), "storage": storage, "classes": classes, "fingerprint": data["fingerprint"], "shard": shard}


def _check_attack(t: Any, prov: Any, fail: _Fail) -> None:
    p = _attack_provenance(prov, fail)
    _require(t, ("clean", "adv", "labels", "ids", "source_correct", "source_adv_correct", "clean_logits"), fail)
    store = STORAGE_DTYPES[p["storage"]]
    _expect_dtype(t, "clean", (store,), fail)
    _expect_dtype(t, "adv", (store,), fail)
    for name in ("labels", "ids"):
        _expect_dtype(t, name, (torch.int64,), fail)
    shape = _images_shape(t, "clean", fail)
    if t.shape("adv") != shape:
        raise fail(f"tensor 'adv' has shape {list(t.shape('adv'))} but 'clean' has {list(shape)}")
    n = shape[0]
    _expect_rows(t, ("labels", "ids", "source_correct", "source_adv_correct"), n, fail)
    ls = t.shape("clean_logits")
    if len(ls) != 2 or ls[0] != n or ls[1] < 1:
        raise fail(f"tensor 'clean_logits' has shape {list(ls)}, expected ({n}, classes)")
    _expect_dtype(t, "clean_logits", (torch.float32,), fail)
    logits = t.get("clean_logits")
    if not bool(torch.isfinite(logits).all()):
        raise fail("tensor 'clean_logits' holds NaN/inf values")
    shard = p["shard"]
    if shard is not None and shard["stop"] - shard["start"] != n:
        raise fail(f"shard rows {shard['start']}..{shard['stop']} do not match the {n} images it holds")

    labels, ids = t.get("labels"), t.get("ids")
    _check_ids(ids, fail)
    classes = p["classes"] if logits is None else min(p["classes"], logits.shape[1])
    _check_labels(labels, classes, fail)
    source_correct = _check_bool(t, "source_correct", fail)
    source_adv_correct = _check_bool(t, "source_adv_correct", fail)
    if t.has("source_adv_pred"):  # optional: files made before same-class rates lack it
        _expect_dtype(t, "source_adv_pred", (torch.int64,), fail)
        _expect_rows(t, ("source_adv_pred",), n, fail)
        pred = t.get("source_adv_pred")
        if len(pred) and (int(pred.min()) < 0 or int(pred.max()) >= p["classes"]):
            raise fail(f"tensor 'source_adv_pred' holds classes outside 0..{p['classes'] - 1}")
        if not torch.equal(pred == labels, source_adv_correct):
            raise fail("tensor 'source_adv_pred' disagrees with 'source_adv_correct'")

    eps = p["eps"]
    fp = Fingerprinter(shape, torch.uint8)  # the clean set is hashed as 8-bit images, whatever the storage
    for a, b in _chunks(n, _row_bytes(shape, store)):
        clean, adv = t.rows("clean", a, b), t.rows("adv", a, b)
        if store == torch.uint8:
            steps = eps_steps_uint8(eps)
            worst = int((torch.maximum(adv, clean) - torch.minimum(adv, clean)).max())  # |adv - clean| without wrap-around
            if worst > steps:
                raise fail(f"'adv' differs from 'clean' by {worst}/255, more than eps={eps:g} allows ({steps}/255)")
            u8 = clean
        else:
            if not _in_unit_range(adv):
                raise fail("tensor 'adv' has pixels that are NaN/inf or outside [0, 1]")
            u8 = (clean.to(torch.float32) * 255).round().to(torch.uint8)
            # float storage holds k/255 rounded to the dtype, as the attack writes it; NaN/inf or
            # pixels outside [0, 1] cannot survive this round trip either
            if not torch.equal((u8.to(torch.float32) / 255.0).to(store), clean):
                raise fail("tensor 'clean' holds pixels that are not 8-bit values k/255 in [0, 1]")
            worst_f = float((adv.to(torch.float64) - clean.to(torch.float64)).abs().max())
            if worst_f > eps:
                raise fail(f"'adv' differs from 'clean' by {worst_f:.6g}, more than eps={eps:g}")
        fp.update(u8)
    if shard is None and fp.hexdigest(labels, ids) != p["fingerprint"]:
        raise fail("the clean images, labels or ids do not match the data fingerprint in the provenance")

    if logits is not None:
        computed = logits.argmax(1) == labels
        top = logits.max(1, keepdim=True).values
        # a maximum the label shares with another class may have been broken either way when written
        tie = (logits.gather(1, labels.view(-1, 1)) == top).squeeze(1) & ((logits == top).sum(1) > 1)
        bad = int(((computed != source_correct) & ~tie).sum())
        if bad:
            raise fail(f"tensor 'source_correct' disagrees with 'clean_logits' on {bad} sample(s)")


# ------------------------------------------------------------------ satkit.logits


def _check_logits(t: Any, prov: Any, fail: _Fail) -> None:
    if not isinstance(prov, dict):
        raise fail.field("provenance")
    _str(_section(prov, "model", fail), "name", "model.name", fail)
    data = _section(prov, "data", fail)
    _str(data, "fingerprint", "data.fingerprint", fail)
    classes = _optional_classes(data, "data.num_classes", fail)
    _require(t, ("logits", "labels", "ids"), fail)
    _expect_dtype(t, "logits", (torch.float32,), fail)
    for name in ("labels", "ids"):
        _expect_dtype(t, name, (torch.int64,), fail)
    ls = t.shape("logits")
    if len(ls) != 2 or ls[0] < 1 or ls[1] < 1:
        raise fail(f"tensor 'logits' has shape {list(ls)}, expected (N, classes) with N, classes >= 1")
    n = ls[0]
    _expect_rows(t, ("labels", "ids"), n, fail)
    logits = t.get("logits")
    if not bool(torch.isfinite(logits).all()):
        raise fail("tensor 'logits' holds NaN/inf values")
    _check_ids(t.get("ids"), fail)
    _check_labels(t.get("labels"), ls[1] if classes is None else min(classes, ls[1]), fail)
    if t.has("clean"):
        _check_images(t, "clean", n, fail)


# ------------------------------------------------------------------ satkit.data


def _check_images(t: Any, name: str, n: int | None, fail: _Fail) -> tuple[int, ...]:
    dt = t.dtype(name)
    if dt != torch.uint8 and not (isinstance(dt, torch.dtype) and dt.is_floating_point):
        raise fail(f"tensor '{name}' is {_dtype_name(dt)}, expected uint8 or float pixels in [0, 1]")
    shape = _images_shape(t, name, fail)
    if n is not None and shape[0] != n:
        raise fail(f"tensor '{name}' has {shape[0]} rows but the labels have {n}")
    if dt != torch.uint8:
        _check_float_images(t, name, shape, dt, fail)  # type: ignore[arg-type]
    return shape


def _check_data(t: Any, prov: Any, fail: _Fail) -> None:
    if not isinstance(prov, dict):
        raise fail.field("provenance")
    classes = _optional_classes(prov, "num_classes", fail)
    if "data" in prov:
        nested = _optional_classes(_section(prov, "data", fail), "data.num_classes", fail)
        classes = nested if nested is not None else classes
    _require(t, ("images", "labels"), fail)
    shape = t.shape("images")
    if len(shape) == 4 and shape[1] not in (1, 3, 4) and shape[3] in (1, 3, 4):
        raise fail(f"tensor 'images' has shape {list(shape)}, which looks like (N, H, W, C); "
                   "store (N, C, H, W), e.g. images.permute(0, 3, 1, 2).contiguous()")
    n = _check_images(t, "images", None, fail)[0]
    _expect_dtype(t, "labels", _INT_DTYPES, fail)
    _expect_rows(t, ("labels",), n, fail)
    _check_labels(t.get("labels").to(torch.int64), classes, fail)
    if t.has("ids"):
        _expect_dtype(t, "ids", _INT_DTYPES, fail)
        _expect_rows(t, ("ids",), n, fail)
        _check_ids(t.get("ids").to(torch.int64), fail)
