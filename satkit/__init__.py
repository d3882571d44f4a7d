"""satkit: Similarity by Attack Transferability (SAT) for image classifiers.

The library never prints, never exits and never imports the CLI stack; the
``satkit`` command (``satkit.cli``) is a thin layer over the functions here.
"""

__version__ = "0.1.0"

from satkit.errors import SatkitError  # noqa: E402

__all__ = ["SatkitError", "__version__"]
