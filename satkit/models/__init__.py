"""Model specs -> wrapped, eval-mode, frozen classifiers taking [0, 1] canvas pixels.

The names below load on first use (PEP 562), so torch-free parts of this package
(``satkit.models.hub``: is a model's pretrained weights reachable at all?) can answer
before torch is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from satkit.models.registry import ModelOptions, load_model, model_display_name  # noqa: F401 (lazy, see __getattr__)
    from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel, preprocess  # noqa: F401

_WHERE = {
    "ModelOptions": "satkit.models.registry",
    "load_model": "satkit.models.registry",
    "model_display_name": "satkit.models.registry",
    "ClassifierWrapper": "satkit.models.wrapper",
    "DataConfig": "satkit.models.wrapper",
    "LoadedModel": "satkit.models.wrapper",
    "preprocess": "satkit.models.wrapper",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'satkit.models' has no attribute {name!r}")
