"""One typed header per file format: its fields, defaults for older files, to/from the stored dict,
the checks of a file's tensors against it, and "does this file answer a request".

- :mod:`satkit.formats.attack` -- ``satkit.attack`` files (:class:`AttackHeader`, :class:`AttackRequest`)
- :mod:`satkit.formats.logits` -- ``satkit.logits`` files (:class:`LogitsHeader`)
- :mod:`satkit.formats.data` -- ``satkit.data`` files (:class:`DataHeader`)
- :mod:`satkit.formats.transfer` -- the transfer table's columns (CSV/parquet)
- :mod:`satkit.formats.files` -- reading (verified) and writing tensor files through their headers

The study's settings (``study.json``) keep their typed home in :mod:`satkit.study.layout` for now.
Names are imported lazily: table-only commands do not pay for torch.
"""

_FILES = {"SatkitFile", "read_satkit_file", "write_satkit_file", "verify_file", "HEADERS"}
_HEADERS = {"AttackHeader": "attack", "AttackRequest": "attack", "AttackSettings": "attack", "AttackStats": "attack",
            "ShardInfo": "attack", "LogitsHeader": "logits", "DataHeader": "data"}


def __getattr__(name):
    import importlib

    if name in _FILES:
        return getattr(importlib.import_module("satkit.formats.files"), name)
    if name in _HEADERS:
        return getattr(importlib.import_module(f"satkit.formats.{_HEADERS[name]}"), name)
    if name in ("ModelInfo", "DataInfo"):
        return getattr(importlib.import_module("satkit.formats.sections"), name)
    raise AttributeError(name)


__all__ = ["HEADERS", "AttackHeader", "AttackRequest", "AttackSettings", "AttackStats", "DataHeader", "DataInfo",
           "LogitsHeader", "ModelInfo", "SatkitFile", "ShardInfo", "read_satkit_file", "verify_file", "write_satkit_file"]
