"""Analyses on attack files and SAT matrices."""
