"""``satkit.attack``: one source model's adversarial examples on a clean set, and what they were made from.

Tensors (see docs/formats.md): ``clean`` and ``adv`` in the storage dtype (N, C, H, W),
``labels``/``ids`` int64 (N,), ``source_correct``/``source_adv_correct`` bool (N,),
``source_adv_pred`` int64 (N,) (optional: older files lack it), ``clean_logits`` float32 (N, classes).

:class:`AttackHeader` is the provenance: its fields, the defaults for older files, the dict
written into the file, the checks of the tensors against it (:meth:`AttackHeader.verify`)
and the one rule that says whether a stored file answers a request (:meth:`AttackHeader.answers`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from satkit.errors import InputFileError
from satkit.formats import checks as C
from satkit.formats.fields import Fail, fraction, put, rest, section, text, whole
from satkit.formats.sections import DataInfo, ModelInfo, _split
from satkit.io.fingerprint import Fingerprinter
from satkit.io.pixels import STORAGE_DTYPES, eps_steps_uint8
from satkit.io.tensorfile import canonical_json
from satkit.io.tensorview import DictTensors, Tensors

FORMAT = "satkit.attack"
TODO = "remake it with `satkit attack`"
TENSORS = ("clean", "adv", "labels", "ids", "source_correct", "source_adv_correct", "clean_logits")
OPTIONAL_TENSORS = ("source_adv_pred",)  # absent from files made before same-class rates


@dataclass(frozen=True)
class AttackSettings:
    """``provenance["attack"]``: :meth:`satkit.attacks.AttackParams.to_dict`, as stored.

    ``options`` is absent for an attack without options (PGD), ``attack_all`` absent
    unless True: files made before either keep their bytes and their attack keys.
    """

    eps: float | None = None  # L-inf budget, pixel scale [0, 1]
    steps: int | None = None
    step_size: float | None = None  # resolved (the attack's default rule applied)
    random_start: bool | None = None
    seed: int | None = None
    attack: str | None = None  # registry name; absent in the oldest files (PGD)
    storage: str | None = None  # storage dtype, as in ``storage_dtype``
    norm: str | None = None
    loss: str | None = None
    options: dict[str, Any] | None = None
    attack_all: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    NAMES = ("eps", "steps", "step_size", "random_start", "seed", "attack", "storage", "norm", "loss", "options",
             "attack_all")

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> AttackSettings:
        named, extra = _split(d, cls.NAMES)
        return cls(**named, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), **{k: getattr(self, k) for k in self.NAMES})

    @property
    def name(self) -> str:
        return self.attack if self.attack is not None else "pgd"


@dataclass(frozen=True)
class AttackStats:
    """``provenance["stats"]``: what the attack did (not an input: never part of the key)."""

    source_clean_accuracy: float | None = None
    attack_success_rate: float | None = None  # of the correct samples, the fraction fooled (NaN: none correct)
    attacked: int | None = None  # samples attacked; absent in files made before the skip
    extra: dict[str, Any] = field(default_factory=dict)

    NAMES = ("source_clean_accuracy", "attack_success_rate", "attacked")

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> AttackStats:
        named, extra = _split(d, cls.NAMES)
        return cls(**named, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), **{k: getattr(self, k) for k in self.NAMES})


@dataclass(frozen=True)
class ShardInfo:
    """``provenance["shard"]``: rows [start, stop) of ``n_total``, shard ``index`` of ``count``."""

    index: int
    count: int
    start: int
    stop: int
    n_total: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "start": self.start, "stop": self.stop, "n_total": self.n_total}


@dataclass(frozen=True)
class AttackRequest:
    """What a caller wants an attack file to hold; :meth:`AttackHeader.answers` says whether one does.

    The batch size is not part of it: it changes the order of float sums, not the attack.
    """

    name: str  # model display name
    weights_id: str | None  # None (unknown weights) never matches: redoing is safe, trusting a stale file is not
    attack: Mapping[str, Any]  # AttackParams.to_dict()
    storage: str
    fingerprint: str  # the clean set's
    amp: str = "off"


_TOP = ("command", "versions", "model", "attack", "data", "storage_dtype", "amp", "batch_size", "numerics",
        "attack_key", "stats", "shard", "merged_from", "rerun")


@dataclass(frozen=True)
class AttackHeader:
    """The provenance of an attack file, typed; ``to_dict`` is what the file stores (sorted JSON)."""

    model: ModelInfo
    attack: AttackSettings
    data: DataInfo
    storage_dtype: str | None = None  # absent in the oldest files: then ``attack.storage``
    command: str | None = None  # "attack"
    versions: dict[str, str] | None = None  # satkit, torch, timm, python
    amp: str | None = None  # autocast mode; absent means "off"
    batch_size: int | None = None  # kernels may sum in another order at another batch size
    numerics: dict[str, Any] | None = None  # device, GPU, CUDA/cuDNN, TF32, determinism (satkit.devices)
    attack_key: str | None = None  # identity of the content (:meth:`key`)
    stats: AttackStats | None = None
    shard: ShardInfo | None = None  # present: the file holds one shard (transfer refuses it until merged)
    merged_from: list[str] | None = None  # shard file names a merged file was joined from
    rerun: str | None = None  # the command line that made it (never executed: see `satkit info`)
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ dict <-> header

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance", todo: str = TODO) -> AttackHeader:
        """The header of a stored provenance, its fields checked in the order the one-line errors name them."""
        fail = Fail(where, InputFileError, todo)
        if not isinstance(d, dict):
            raise fail.field("provenance")
        model = section(d, "model", fail)
        text(model, "name", "model.name", fail)
        text(model, "weights_id", "model.weights_id", fail)
        data = section(d, "data", fail)
        text(data, "fingerprint", "data.fingerprint", fail)
        whole(data, "num_classes", "data.num_classes", fail, 1)
        attack = section(d, "attack", fail)
        fraction(attack, "eps", "attack.eps", fail)
        whole(attack, "steps", "attack.steps", fail, 1)
        storage = d.get("storage_dtype", attack.get("storage"))
        if not isinstance(storage, str) or storage not in STORAGE_DTYPES:
            raise fail.field("storage_dtype")
        if "storage" in attack and attack["storage"] != storage:
            raise fail.field("attack.storage")
        if "attack_key" in d and not isinstance(d["attack_key"], str):
            raise fail.field("attack_key")
        shard = None
        if "shard" in d:  # present at all means a shard: an emptied entry must not pass as a whole file
            s = section(d, "shard", fail)
            for k in ("index", "count", "start", "stop", "n_total"):
                whole(s, k, f"shard.{k}", fail, 0)
            if not s["index"] < s["count"]:
                raise fail.field("shard.index")
            if not s["start"] < s["stop"] <= s["n_total"]:
                raise fail.field("shard.stop")
            shard = ShardInfo(**{k: s[k] for k in ("index", "count", "start", "stop", "n_total")})
        # fields no check reads are kept as stored; a section of the wrong type travels in ``extra``
        parsed = {"model", "attack", "data", "shard"}
        named = {k: d[k] for k in _TOP if k not in parsed and d.get(k) is not None}
        for k in ("versions", "numerics", "stats"):
            if k in named and not isinstance(named[k], dict):
                del named[k]
        if "stats" in named:
            named["stats"] = AttackStats.parse(named["stats"])
        return cls(model=ModelInfo.parse(model), attack=AttackSettings.parse(attack), data=DataInfo.parse(data),
                   shard=shard, **named, extra=rest(d, tuple(parsed) + tuple(named)))

    def to_dict(self) -> dict[str, Any]:
        return put(dict(self.extra), command=self.command, versions=self.versions, model=self.model.to_dict(),
                   attack=self.attack.to_dict(), data=self.data.to_dict(), storage_dtype=self.storage_dtype,
                   amp=self.amp, batch_size=self.batch_size, numerics=self.numerics, attack_key=self.attack_key,
                   stats=self.stats.to_dict() if self.stats is not None else None,
                   shard=self.shard.to_dict() if self.shard is not None else None,
                   merged_from=self.merged_from, rerun=self.rerun)

    # ------------------------------------------------------------------ derived

    @property
    def storage(self) -> str | None:
        return self.storage_dtype if self.storage_dtype is not None else self.attack.storage

    @property
    def amp_mode(self) -> str:
        return self.amp if self.amp is not None else "off"

    @property
    def num_classes(self) -> int | None:
        return self.data.num_classes

    def key(self) -> str:
        """Identity of the content: model weights, attack parameters, clean set, autocast (not versions)."""
        core: dict[str, Any] = {
            "model": {"name": self.model.name, "weights_id": self.model.weights_id, "data_config": self.model.data_config},
            "attack": self.attack.to_dict(),
            "data": self.data.fingerprint,
            "storage": self.storage_dtype,
        }
        if self.amp_mode != "off":  # other numerics, other adversarials (absent for full precision: keys stay stable)
            core["amp"] = self.amp
        return hashlib.sha256(canonical_json(core).encode()).hexdigest()[:16]

    def keyed(self) -> AttackHeader:
        """This header with its ``attack_key`` computed."""
        return replace(self, attack_key=self.key())

    def answers(self, req: AttackRequest) -> bool:
        """Whether a file with this header holds exactly what ``req`` asks for (the rule every reuse follows)."""
        return (
            req.weights_id is not None
            and self.shard is None
            and self.model.same_weights(req.name, req.weights_id)
            and self.data.fingerprint == req.fingerprint
            and self.attack.to_dict() == dict(req.attack)
            and self.storage_dtype == req.storage
            and self.amp_mode == req.amp
        )

    # ------------------------------------------------------------------ tensors

    def verify(self, t: Tensors | Mapping[str, torch.Tensor], where: str, todo: str = TODO) -> None:
        """Check the tensors against this header; raises ``WHERE: what is wrong; TODO`` on the first defect.

        Pixels: clean are 8-bit values (k/255 in the storage dtype), adv finite in [0, 1]
        and within eps of clean exactly as stored; ids unique, labels in [0, classes);
        ``source_correct`` agrees with the stored clean logits; the clean set matches the
        fingerprint (except in a shard, whose fingerprint names the whole set).
        """
        if isinstance(t, Mapping):
            t = DictTensors(t)
        fail = Fail(where, InputFileError, todo)
        C.require(t, TENSORS, fail)
        store = STORAGE_DTYPES[str(self.storage)]
        C.expect_dtype(t, "clean", (store,), fail)
        C.expect_dtype(t, "adv", (store,), fail)
        for name in ("labels", "ids"):
            C.expect_dtype(t, name, (torch.int64,), fail)
        shape = C.images_shape(t, "clean", fail)
        if t.shape("adv") != shape:
            raise fail(f"tensor 'adv' has shape {list(t.shape('adv'))} but 'clean' has {list(shape)}")
        n = shape[0]
        C.expect_rows(t, ("labels", "ids", "source_correct", "source_adv_correct"), n, fail)
        ls = t.shape("clean_logits")
        if len(ls) != 2 or ls[0] != n or ls[1] < 1:
            raise fail(f"tensor 'clean_logits' has shape {list(ls)}, expected ({n}, classes)")
        C.expect_dtype(t, "clean_logits", (torch.float32,), fail)
        logits = t.get("clean_logits")
        if not bool(torch.isfinite(logits).all()):
            raise fail("tensor 'clean_logits' holds NaN/inf values")
        shard = self.shard
        if shard is not None and shard.stop - shard.start != n:
            raise fail(f"shard rows {shard.start}..{shard.stop} do not match the {n} images it holds")

        labels, ids = t.get("labels"), t.get("ids")
        C.check_ids(ids, fail)
        n_classes = int(self.data.num_classes)  # type: ignore[arg-type]
        C.check_labels(labels, min(n_classes, logits.shape[1]), fail)
        source_correct = C.check_bool(t, "source_correct", fail)
        source_adv_correct = C.check_bool(t, "source_adv_correct", fail)
        if t.has("source_adv_pred"):  # optional: files made before same-class rates lack it
            C.expect_dtype(t, "source_adv_pred", (torch.int64,), fail)
            C.expect_rows(t, ("source_adv_pred",), n, fail)
            pred = t.get("source_adv_pred")
            if len(pred) and (int(pred.min()) < 0 or int(pred.max()) >= n_classes):
                raise fail(f"tensor 'source_adv_pred' holds classes outside 0..{n_classes - 1}")
            if not torch.equal(pred == labels, source_adv_correct):
                raise fail("tensor 'source_adv_pred' disagrees with 'source_adv_correct'")

        eps = float(self.attack.eps)  # type: ignore[arg-type]
        fp = Fingerprinter(shape, torch.uint8)  # the clean set is hashed as 8-bit images, whatever the storage
        for a, b in C.chunks(n, C.row_bytes(shape, store)):
            clean, adv = t.rows("clean", a, b), t.rows("adv", a, b)
            if store == torch.uint8:
                steps = eps_steps_uint8(eps)
                worst = int((torch.maximum(adv, clean) - torch.minimum(adv, clean)).max())  # |adv - clean| without wrap-around
                if worst > steps:
                    raise fail(f"'adv' differs from 'clean' by {worst}/255, more than eps={eps:g} allows ({steps}/255)")
                u8 = clean
            else:
                if not C.in_unit_range(adv):
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
        if shard is None and fp.hexdigest(labels, ids) != self.data.fingerprint:
            raise fail("the clean images, labels or ids do not match the data fingerprint in the provenance")

        computed = logits.argmax(1) == labels
        top = logits.max(1, keepdim=True).values
        # a maximum the label shares with another class may have been broken either way when written
        tie = (logits.gather(1, labels.view(-1, 1)) == top).squeeze(1) & ((logits == top).sum(1) > 1)
        bad = int(((computed != source_correct) & ~tie).sum())
        if bad:
            raise fail(f"tensor 'source_correct' disagrees with 'clean_logits' on {bad} sample(s)")


def attack_key(prov: Mapping[str, Any]) -> str:
    """The content key of a provenance dict (:meth:`AttackHeader.key`), for callers that hold one."""
    return AttackHeader(model=ModelInfo.parse(prov["model"]), attack=AttackSettings.parse(prov["attack"]),
                        data=DataInfo.parse(prov["data"]), storage_dtype=prov["storage_dtype"], amp=prov.get("amp")).key()
