"""The one gate: every file satkit reads or writes goes through this package (bytes, atomic writes,
safetensors access; what a file's provenance means is :mod:`satkit.formats`).

Names are imported lazily so that table-only commands (cards, cluster) do not
pay for importing torch.
"""

from satkit.io.atomic import atomic_output, check_output_path, check_outputs

_TENSORFILE = {"FORMAT_VERSIONS", "TensorFile", "file_sha256", "read_tensor_file", "write_tensor_file"}


def __getattr__(name):
    if name in _TENSORFILE:
        from satkit.io import tensorfile

        return getattr(tensorfile, name)
    if name == "DirectoryLock":  # fcntl: POSIX only, so imported on use
        from satkit.io.lock import DirectoryLock

        return DirectoryLock
    raise AttributeError(name)


__all__ = ["DirectoryLock", "atomic_output", "check_output_path", "check_outputs", *sorted(_TENSORFILE)]
