"""Reading provenance fields: the one-line error of a file, and typed getters that raise it.

Every header's ``from_dict`` builds its fields with these, so a malformed field is
``WHERE: provenance is malformed (field NAME); WHAT TO DO`` whatever the format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from satkit.errors import InputFileError, SatkitError


class Fail:
    """Builds the one-line error of one file: ``WHERE: what is wrong; what to do``."""

    def __init__(self, where: str, kind: type[SatkitError] = InputFileError, todo: str = ""):
        self.where, self.kind, self.todo = where, kind, todo

    def __call__(self, what: str) -> SatkitError:
        return self.kind(f"{self.where}: {what}; {self.todo}")

    def field(self, name: str) -> SatkitError:
        return self(f"provenance is malformed (field {name})")


def section(d: Mapping[str, Any], key: str, fail: Fail, name: str | None = None) -> dict[str, Any]:
    """``d[key]``, which must be a JSON object."""
    v = d.get(key)
    if not isinstance(v, dict):
        raise fail.field(name or key)
    return v


def loose_section(d: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``d[key]`` if it is a JSON object (a field no check needs: anything else reads as absent)."""
    v = d.get(key)
    return v if isinstance(v, dict) else None


def text(d: Mapping[str, Any], key: str, name: str, fail: Fail) -> str:
    """A non-empty string."""
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise fail.field(name)
    return v


def whole(d: Mapping[str, Any], key: str, name: str, fail: Fail, lo: int) -> int:
    """An integer (not a bool) >= ``lo``."""
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise fail.field(name)
    return v


def fraction(d: Mapping[str, Any], key: str, name: str, fail: Fail) -> float:
    """A finite number in [0, 1], kept as stored (an int stays an int: the bytes round-trip)."""
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
        raise fail.field(name)
    return v


def rest(d: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The keys of ``d`` a header does not name: kept as they are, written back as they were."""
    return {k: v for k, v in d.items() if k not in known}


def put(out: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``out`` with the fields that are not None (an absent optional field stays absent)."""
    out.update({k: v for k, v in fields.items() if v is not None})
    return out
