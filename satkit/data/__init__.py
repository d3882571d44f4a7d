"""Data sources. Every source becomes a :class:`CleanSet`: 8-bit images at one
canvas size, int64 labels, stable int64 sample ids and a fingerprint."""

from satkit.data.base import CleanSet, stratified_sample
from satkit.data.loaders import load_data

__all__ = ["CleanSet", "load_data", "stratified_sample"]
