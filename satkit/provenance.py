"""Provenance common to every file satkit writes (versions; no timestamps, so reruns are byte-identical)."""

from __future__ import annotations

import platform
import re
from typing import Any, Callable

ProgressFn = Callable[[int, int], None]
"""Progress callback: ``progress(done, total)`` in the unit the caller documents."""


def versions() -> dict[str, str]:
    import timm
    import torch  # here, not at the top: printing an error (printable) must not pay torch's start-up

    import satkit

    return {"satkit": satkit.__version__, "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}


def data_provenance(data: Any) -> dict[str, Any]:
    prov = {
        "source": data.source,
        "fingerprint": data.fingerprint,
        "n": len(data),
        "num_classes": data.num_classes,
        "canvas": list(data.canvas),
        "sampling": {k: data.info.get(k) for k in ("n", "seed", "split", "chunk") if k in data.info},
    }
    if data.info.get("labels"):  # only when given: files made without --labels keep their bytes
        prov["labels"] = data.info["labels"]
    return prov


# Characters a terminal acts on instead of showing: C0 (incl. ESC), DEL, C1, line/paragraph
# separators, bidi embeddings/overrides/isolates/marks (they reorder text on screen), and
# lone surrogates (they cannot be encoded for output at all).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(s: str) -> str:
    """``s`` safe to print to a terminal: every control, bidi-control or separator character
    becomes a visible escape (ESC -> ``\\x1b``, U+202E -> ``\\u202e``, newline -> ``\\x0a``).

    For any text that comes from a file or another untrusted source; other text is unchanged.
    """
    return _UNPRINTABLE.sub(_escape, s)


def shell_quote(args: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in args)
