"""File formats: every file satkit reads or writes goes through this package."""

from satkit.io.atomic import atomic_output, check_output_path
from satkit.io.tensorfile import (
    FORMAT_VERSIONS,
    SatkitFile,
    file_sha256,
    read_satkit_file,
    write_satkit_file,
)

__all__ = [
    "FORMAT_VERSIONS",
    "SatkitFile",
    "atomic_output",
    "check_output_path",
    "file_sha256",
    "read_satkit_file",
    "write_satkit_file",
]
