"""What a file given to the wrong command is, and which command reads it.

A table reader that meets binary bytes would say "invalid utf-8"; a user who passed
an attack file to ``satkit matrix`` needs "this is an attack file: `satkit transfer`
reads it". Only the first bytes are read, and nothing in them is trusted beyond
a format name from a fixed list.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# satkit formats -> the commands that read them
READERS = {
    "satkit.attack": "`satkit transfer MODEL FILE` reads attack files (and `satkit info FILE` shows one)",
    "satkit.logits": "`satkit ensemble` and `satkit info FILE` read logits files",
    "satkit.data": "`--data FILE` reads data files",
}
_HEADER_MAX = 1 << 20  # a satkit header is a few kB; more is not worth reading to name a file


def describe(path: str | Path) -> str | None:
    """'a satkit attack file; `satkit transfer ...` reads it' for a file that is not text, else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                if 2 <= n <= _HEADER_MAX:
                    meta = json.loads(fh.read(n).decode("utf-8")).get("__metadata__") or {}
                    fmt = meta.get("format") if isinstance(meta, dict) else None
                    if fmt in READERS:
                        return f"this is a satkit file of format {fmt}; {READERS[fmt]}"
                    return "this is a safetensors file, not a table"
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        pass
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return None
    if magic == b"PK\x03\x04":
        return "this is a zip archive (a .pt2/.pt model?), not a table"
    if magic == b"PAR1":
        return "this is a Parquet file: give it a .parquet name"
    return None
