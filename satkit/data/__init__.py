"""Data sources. Every source becomes a :class:`CleanSet`: 8-bit images at one
canvas size, int64 labels, stable int64 sample ids and a fingerprint. Image
folders can also be opened without decoding (:func:`open_data`) and decoded in
background threads while an attack runs (:mod:`satkit.data.stream`)."""

from satkit.data.base import CleanSet, stratified_sample
from satkit.data.loaders import DataRequest, default_eps, load_data, open_data
from satkit.data.stream import FolderImages, ImageStream

__all__ = ["CleanSet", "DataRequest", "FolderImages", "ImageStream", "default_eps", "load_data", "open_data", "stratified_sample"]
