"""satkit info: what a satkit file holds and how to rerun it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from satkit.cli import common as c


def info(
    file: Path = typer.Argument(..., help="A file satkit wrote (attack or logits .safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full provenance as JSON on stdout."),
) -> None:
    """Show a satkit file's format, tensors, provenance and the command that reruns it.

    Example:

        satkit info adv/resnet50.safetensors

        satkit info adv/resnet50.safetensors --json | jq .attack
    """
    from satkit.io.tensorfile import FORMAT_VERSIONS, read_satkit_file

    f = read_satkit_file(file, tuple(FORMAT_VERSIONS))
    if as_json:
        typer.echo(json.dumps({"format": f.format, "format_version": f.version, "provenance": f.provenance}, indent=2, sort_keys=True))
        return
    from safetensors import safe_open

    lines = [f"{file}: {f.format} v{f.version}"]
    with safe_open(str(file), framework="pt") as sf:
        for k in sorted(f.keys):
            sl = sf.get_slice(k)
            lines.append(f"  tensor {k}: {sl.get_dtype()} {list(sl.get_shape())}")
    p = f.provenance
    if "model" in p:
        m = p["model"]
        lines.append(f"  model: {m.get('name')} ({m.get('kind')}, weights {m.get('weights_id')})")
    if "attack" in p:
        a = p["attack"]
        lines.append(f"  attack: {a.get('attack')} eps={a.get('eps')} steps={a.get('steps')} step_size={a.get('step_size')} "
                     f"random_start={a.get('random_start')} seed={a.get('seed')}")
    if "data" in p:
        d = p["data"]
        lines.append(f"  data: {d.get('source')} n={d.get('n')} canvas={d.get('canvas')} fingerprint={d.get('fingerprint')}")
    if "stats" in p:
        lines.append("  stats: " + ", ".join(f"{k}={v}" for k, v in p["stats"].items()))
    if "versions" in p:
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()))
    lines.append(f"  rerun: {p.get('rerun') or _rerun(p)}")
    typer.echo("\n".join(lines))


def _rerun(p: dict) -> str:
    """Rebuild the command line from provenance when the file was written by the library directly."""
    if p.get("command") == "logits" and "model" in p and "data" in p:
        m, d = p["model"], p["data"]
        s = d.get("sampling", {})
        parts = ["satkit", "logits", m.get("spec", m.get("name")), "--data", str(d.get("source"))]
        if s.get("n"):
            parts += ["--n", str(s["n"]), "--data-seed", str(s.get("seed", 0))]
        parts += ["--canvas", str(d["canvas"][-1]), "-o", "OUT.safetensors"]
        from satkit.provenance import shell_quote

        return shell_quote(parts)
    if p.get("command") != "attack":
        return "(not recorded)"
    m, a, d = p["model"], p["attack"], p["data"]
    s = d.get("sampling", {})
    parts = ["satkit", "attack", m.get("spec", m.get("name")), "--data", str(d.get("source"))]
    if s.get("n"):
        parts += ["--n", str(s["n"]), "--data-seed", str(s.get("seed", 0))]
    parts += ["--eps", repr(a["eps"]), "--steps", str(a["steps"]), "--step-size", repr(a["step_size"]),
              "--random-start" if a["random_start"] else "--no-random-start", "--seed", str(a["seed"]),
              "--storage", p.get("storage_dtype", "uint8"), "--canvas", str(d["canvas"][-1])]
    if p.get("batch_size"):
        parts += ["--batch-size", str(p["batch_size"])]
    parts += ["-o", "OUT.safetensors"]
    if m.get("arch"):
        parts += ["--arch", m["arch"]]
    from satkit.provenance import shell_quote

    return shell_quote(parts)
