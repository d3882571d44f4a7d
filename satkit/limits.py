"""The one valid range of every size-like setting: how much work or memory a number may ask for.

A value from the command line, a library call or a ``study.json`` is checked against
the same range here, so a tampered settings file (``"canvas": 60000``: 921 GB of
pixels; ``"steps": 1000000000``: runs until killed) is refused in one line before
any work starts, exactly as ``--canvas 100000`` is. The bounds are generous (an order
of magnitude or more above any run the paper or this project makes) and sane (none
asks for more than memory or a lifetime of compute). ``docs/guide.md`` lists them
(``tests/test_trust_limits.py`` keeps that table equal to this one), and each
option's ``--help`` states its range.

Torch-free on purpose: the CLI formats its help from these before importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satkit.errors import ParameterError


@dataclass(frozen=True)
class SizeRange:
    """An inclusive integer range ``low..high`` for the setting ``name`` (CLI ``flag``), in ``unit``."""

    name: str  # as study.json and the library name it
    flag: str  # the CLI option
    low: int
    high: int
    unit: str
    why: str = ""  # one line for the docs: what the upper bound protects

    @property
    def text(self) -> str:
        """``1 to 4096 px``: for help texts and messages."""
        return f"{self.low} to {self.high} {self.unit}"

    def check(self, value: Any) -> int:
        """``value`` as an int, or a one-line ParameterError naming the setting and its range."""
        ok = False
        if not isinstance(value, bool):  # True is not a size
            try:  # ints, numpy integers and the like; not floats or strings
                import operator

                value = operator.index(value)
                ok = True
            except TypeError:
                pass
        if not ok or not self.low <= value <= self.high:
            shown = value if isinstance(value, (int, float, str)) else type(value).__name__
            raise ParameterError(f"{self.flag} ({self.name}) must be an integer from {self.text}, got {shown!r}")
        return int(value)

    def check_optional(self, value: Any) -> int | None:
        return None if value is None else self.check(value)


# data (satkit.data.DataRequest; study.json "n", "canvas", "chunk")
CANVAS = SizeRange("canvas", "--canvas", 1, 4096, "px",
                   "4096 px RGB is 50 MB an image as uint8, 200 MB as float32 inside a model")
N = SizeRange("n", "--n", 1, 10_000_000, "images", "a sample larger than ImageNet's 1.28 M training images")
CHUNK_INDEX = SizeRange("chunk index", "chunk[0]", 0, 1_000_000, "chunks", "an adaptive study's chunk number (study.json only)")
CHUNK = SizeRange("chunk", "--chunk", 10, 100_000, "images",
                  "an adaptive study adds images in chunks of this many; 10 is the least a stratified chunk holds")

# attacks (satkit.attacks.AttackParams; study.json "attack")
STEPS = SizeRange("steps", "--steps", 1, 100_000, "iterations",
                  "the paper uses 50; 100,000 is 2,000 times that")

# running (satkit.models.batching.parse_batch_size; study.json has none: batch size does not change a file)
BATCH_SIZE = SizeRange("batch_size", "--batch-size", 1, 65_536, "images",
                       "a batch is allocated whole (65,536 images at 224 px = 9.9 GB as uint8)")

# analyses
K = SizeRange("k", "-k", 1, 1_000, "clusters", "clusters of the SAT matrix (also at most the number of models)")
N_BOOT = SizeRange("n_boot", "--n-boot", 1, 1_000_000, "resamples", "bootstrap resamples of the per-sample table")
PERMUTATIONS = SizeRange("permutations", "--permutations", 1, 10_000_000, "permutations",
                         "Mantel test permutations of the SAT matrix")

ALL = (CANVAS, N, CHUNK_INDEX, CHUNK, STEPS, BATCH_SIZE, K, N_BOOT, PERMUTATIONS)
