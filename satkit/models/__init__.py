"""Model specs -> wrapped, eval-mode, frozen classifiers taking [0, 1] canvas pixels."""

from satkit.models.registry import ModelOptions, load_model, model_display_name
from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel, preprocess

__all__ = [
    "ClassifierWrapper",
    "DataConfig",
    "LoadedModel",
    "ModelOptions",
    "load_model",
    "model_display_name",
    "preprocess",
]
