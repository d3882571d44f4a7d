"""File formats: every file satkit reads or writes goes through this package.

Names are imported lazily so that table-only commands (cards, cluster) do not
pay for importing torch.
"""

from satkit.io.atomic import atomic_output, check_output_path

_TENSORFILE = {"FORMAT_VERSIONS", "SatkitFile", "file_sha256", "read_satkit_file", "write_satkit_file"}


def __getattr__(name):
    if name in _TENSORFILE:
        from satkit.io import tensorfile

        return getattr(tensorfile, name)
    raise AttributeError(name)


__all__ = ["atomic_output", "check_output_path", *sorted(_TENSORFILE)]
