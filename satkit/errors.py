"""Exceptions a user can act on.

Every error that bad input can cause is a :class:`SatkitError` whose message
is one line naming the problem and what to do. The CLI turns these into a
one-line message on stderr and a non-zero exit; anything else is a bug.
"""


class SatkitError(Exception):
    """Base class: a problem with the user's input or environment."""


class InputFileError(SatkitError):
    """A file is missing, unreadable, truncated or not in the expected format."""


class FormatVersionError(InputFileError):
    """A satkit file written by a newer satkit."""


class MismatchError(SatkitError):
    """Files that cannot be combined (different clean sets, samples, attacks)."""


class ModelError(SatkitError):
    """A model spec that cannot be resolved, loaded or run."""


class DataError(SatkitError):
    """A data source that cannot be read or does not fit the model."""


class DeviceError(SatkitError):
    """An unknown or unavailable device."""


class ParameterError(SatkitError):
    """An option value out of range."""


class OutputError(SatkitError):
    """An output path that cannot be written."""
