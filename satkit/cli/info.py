"""satkit info: what a satkit file holds and how to rerun it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import typer


def info(
    file: Path = typer.Argument(..., help="A file satkit wrote (attack or logits .safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full provenance as JSON on stdout."),
) -> None:
    """Show a satkit file's format, tensors, provenance and the command that reruns it.

    Example:

        satkit info adv/resnet50.safetensors

        satkit info adv/resnet50.safetensors --json | jq .attack
    """
    from satkit.formats.files import read_satkit_file
    from satkit.io.tensorfile import FORMAT_VERSIONS

    f = read_satkit_file(file, tuple(FORMAT_VERSIONS))
    if as_json:
        # the provenance as stored; ensure_ascii: control and bidi characters from the file come out as \uXXXX escapes
        typer.echo(json.dumps({"format": f.format, "format_version": f.version, "provenance": f.provenance},
                              indent=2, sort_keys=True, ensure_ascii=True))
        return
    from safetensors import safe_open

    from satkit.provenance import printable

    lines = [f"{file}: {f.format} v{f.version}"]
    with safe_open(str(f.path), framework="pt") as sf:  # f.path: - is spooled to a file
        for k in sorted(f.keys):
            sl = sf.get_slice(k)
            lines.append(f"  tensor {k}: {sl.get_dtype()} {list(sl.get_shape())}")
    h = f.header
    lines += header_lines(h)
    # the rerun line maps the header's fields to flags, each validated: the file may be crafted
    lines.append(f"  rerun: {rerun_command(h.to_dict(), f.keys)}")
    # Every string here may come from a crafted file: escape what a terminal would act on
    # (escape sequences, bidi reordering, line breaks that could fake another line).
    typer.echo("\n".join(printable(line) for line in lines))


def header_lines(h) -> list[str]:
    """The summary lines of a header (attack, logits or data): model, attack, data, stats, versions, numerics."""
    from satkit.formats.attack import AttackHeader
    from satkit.formats.data import DataHeader
    from satkit.io.pixels import eps_steps_uint8

    lines = []
    model = getattr(h, "model", None)
    if model is not None:
        lines.append(f"  model: {model.name} ({model.kind}, weights {model.weights_id})")
    if isinstance(h, AttackHeader):
        a = h.attack
        eps, storage = a.eps, h.storage
        stored = (f" (stored {eps_steps_uint8(eps)}/255 = {eps_steps_uint8(eps) / 255:.4g})"
                  if storage == "uint8" and isinstance(eps, (int, float)) and 0 <= eps <= 1 else "")
        opts = a.options
        lines.append(f"  attack: {a.attack} eps={eps}{stored} steps={a.steps} step_size={a.step_size} "
                     f"random_start={a.random_start} seed={a.seed}"
                     + ("".join(f" {k}={v}" for k, v in opts.items()) if isinstance(opts, dict) else "")
                     + (" attack_all=True" if a.attack_all is True else ""))
    d = h.data.to_dict() if not isinstance(h, DataHeader) else (h.data or {})
    if d:
        lines.append(f"  data: {d.get('source')} n={d.get('n')} canvas={d.get('canvas')} fingerprint={d.get('fingerprint')}")
    stats = _stats(h)
    if stats:
        lines.append("  stats: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
    loose = h.to_dict() if isinstance(h, DataHeader) else {}  # a data file's other sections, as a user wrote them
    versions = getattr(h, "versions", loose.get("versions"))
    numerics = getattr(h, "numerics", loose.get("numerics"))
    if isinstance(versions, dict) and versions:
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if isinstance(numerics, dict) and numerics:  # what decided the numbers: device, GPU, CUDA/cuDNN, TF32, determinism
        lines.append("  numerics: " + ", ".join(f"{k}={v}" for k, v in numerics.items() if v is not None))
    return lines


def _stats(h) -> dict:
    from satkit.formats.attack import AttackHeader
    from satkit.formats.data import DataHeader
    from satkit.formats.logits import LogitsHeader

    if isinstance(h, AttackHeader):
        return h.stats.to_dict() if h.stats is not None else {}
    st = h.to_dict().get("stats")  # logits: the accuracy; a data file: whatever its writer put there
    return st if isinstance(st, dict) and isinstance(h, (LogitsHeader, DataHeader)) else {}


def _section(p: dict, key: str) -> dict:
    v = p.get(key)
    return v if isinstance(v, dict) else {}


class _Malformed(Exception):
    """A provenance field the rerun command cannot be rebuilt from."""

    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


_MAX_INT = 2**63 - 1


def _text(v: object, field: str, *, positional: bool = False) -> str:
    from satkit.provenance import printable

    # printable(v) != v: control/bidi characters; a leading "-" in a positional would be read as an option
    if not isinstance(v, str) or not v.strip() or len(v) > 4096 or printable(v) != v or (positional and v.startswith("-")):
        raise _Malformed(field)
    return v


def _int(v: object, field: str, lo: int, hi: int = _MAX_INT) -> str:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Malformed(field)
    return str(v)


def _float(v: object, field: str, lo: float, hi: float, *, lo_open: bool = False) -> str:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Malformed(field)
    if not (lo < v <= hi if lo_open else lo <= v <= hi):
        raise _Malformed(field)
    return repr(float(v))


def _common_args(p: dict, command: str) -> list[str]:
    """satkit COMMAND SPEC --data ... [--n ... --data-seed ...] --canvas ... [--amp ...] [--random-init]"""
    from satkit.devices import AMP_DTYPES

    m, d = _section(p, "model"), _section(p, "data")
    if not m:
        raise _Malformed("model")
    if not d:
        raise _Malformed("data")
    spec = _text(m.get("spec", m.get("name")), "model.spec", positional=True)
    parts = ["satkit", command, spec, "--data", _text(d.get("source"), "data.source")]
    if d.get("labels") is not None:
        parts += ["--labels", _text(d["labels"], "data.labels")]
    s = d.get("sampling", {})
    if not isinstance(s, dict):
        raise _Malformed("data.sampling")
    if s.get("n") is not None:
        parts += ["--n", _int(s["n"], "data.sampling.n", 1), "--data-seed", _int(s.get("seed", 0), "data.sampling.seed", 0)]
    canvas = d.get("canvas")
    if not isinstance(canvas, list) or not canvas:
        raise _Malformed("data.canvas")
    parts += ["--canvas", _int(canvas[-1], "data.canvas", 1, 1 << 16)]
    amp = p.get("amp", "off")
    if not isinstance(amp, str) or amp not in AMP_DTYPES:
        raise _Malformed("amp")
    if amp != "off":
        parts += ["--amp", amp]
    if m.get("kind") == "timm" and m.get("weights_id") == "random-init":
        parts.append("--random-init")
    kwargs = m.get("model_kwargs")
    if kwargs is not None:
        parts += ["--model-kwargs", _kwargs(kwargs)]
    return parts


def _kwargs(kwargs: object) -> str:
    """``--model-kwargs`` from provenance: identifier names, plain scalar values, no separators inside."""
    if not isinstance(kwargs, dict) or not kwargs:
        raise _Malformed("model.model_kwargs")
    items = []
    for k, v in kwargs.items():
        if not (isinstance(k, str) and k.isidentifier()):
            raise _Malformed("model.model_kwargs")
        if isinstance(v, bool) or v is None:
            text = str(v).lower()
        elif isinstance(v, (int, float)) and math.isfinite(v):
            text = repr(v)
        elif isinstance(v, str) and v and all(ch.isalnum() or ch in "._-" for ch in v):
            text = v
        else:
            raise _Malformed("model.model_kwargs")
        items.append(f"{k}={text}")
    return ",".join(items)


def _attack_args(p: dict) -> list[str]:
    from satkit.io.pixels import STORAGE_DTYPES

    a, m = _section(p, "attack"), _section(p, "model")
    if not a:
        raise _Malformed("attack")
    parts = _common_args(p, "attack")
    attack_name = a.get("attack", "pgd")
    if not isinstance(attack_name, str) or not attack_name.replace("-", "").isalnum():
        raise _Malformed("attack.attack")
    option_args = _attack_option_args(a) if attack_name != "pgd" else []
    if not isinstance(a.get("random_start"), bool):
        raise _Malformed("attack.random_start")
    if not isinstance(a.get("attack_all", False), bool):
        raise _Malformed("attack.attack_all")
    if a.get("attack_all"):
        option_args.append("--attack-all")
    storage = p.get("storage_dtype", a.get("storage", "uint8"))
    if not isinstance(storage, str) or storage not in STORAGE_DTYPES:
        raise _Malformed("storage_dtype")
    parts += ["--eps", _float(a.get("eps"), "attack.eps", 0.0, 1.0),
              "--steps", _int(a.get("steps"), "attack.steps", 1),
              "--step-size", _float(a.get("step_size"), "attack.step_size", 0.0, 1.0, lo_open=True),
              "--random-start" if a["random_start"] else "--no-random-start",
              "--seed", _int(a.get("seed", 0), "attack.seed", -_MAX_INT),
              "--storage", storage, *option_args]
    if p.get("batch_size") is not None:
        parts += ["--batch-size", _int(p["batch_size"], "batch_size", 1)]
    parts += ["-o", "OUT.safetensors"]
    if m.get("arch") is not None:
        parts += ["--arch", _text(m["arch"], "model.arch")]
    return parts


def _attack_option_args(a: dict) -> list[str]:
    """``--attack NAME`` and its option flags, from settings the registry accepts (else the file is malformed)."""
    from satkit.attacks import ATTACKS, AttackParams
    from satkit.errors import SatkitError

    if a.get("attack") not in ATTACKS:
        raise _Malformed("attack.attack")
    try:
        params = AttackParams.from_dict(a)
    except (SatkitError, KeyError, TypeError, ValueError):
        raise _Malformed("attack") from None
    flags = {o.name: o.flag for o in params.spec.options}
    return ["--attack", params.attack, *[x for k, v in params.options for x in (flags[k], repr(v))]]


def _logits_args(p: dict, keys: Sequence[str]) -> list[str]:
    parts = _common_args(p, "logits")
    if "clean" not in keys:
        parts.append("--no-images")
    parts += ["-o", "OUT.safetensors"]
    arch = _section(p, "model").get("arch")
    if arch is not None:
        parts += ["--arch", _text(arch, "model.arch")]
    return parts


def rerun_argv(p: dict, keys: Sequence[str] = ()) -> list[str] | None:
    """The argv that reruns a file, rebuilt from its validated provenance fields.

    A recorded ``rerun`` string is never used: the file may be crafted, and a shell line
    copied from it could carry anything (``; curl ... | sh``). None when the file's command
    has no CLI equivalent; raises _Malformed naming the first field that fails validation.
    """
    if p.get("command") == "attack":
        return _attack_args(p)
    if p.get("command") == "logits":
        return _logits_args(p, keys)
    return None


def rerun_command(p: dict, keys: Sequence[str] = ()) -> str:
    """The shell-quoted rerun command line, or a parenthesized reason it cannot be given."""
    from satkit.provenance import shell_quote

    d = p.get("data") if isinstance(p.get("data"), dict) else {}
    if isinstance(d.get("sampling"), dict) and "chunk" in d["sampling"]:
        return "(made for a chunk of an adaptive study: rerun that satkit study --precision)"
    try:
        argv = rerun_argv(p, keys)
    except _Malformed as e:
        return f"(cannot be rebuilt: field {e.field} is malformed)"
    return shell_quote(argv) if argv is not None else "(not recorded)"
