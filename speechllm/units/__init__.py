"""Discrete speech units: k-means over SSL encoder features, and unit sequence files.

``train_kmeans`` fits :class:`KMeans` on dumped features (``dump_encoder_features``), and
``dump_units`` writes each utterance's nearest-center indices as ``units`` and
``units_dedup`` (consecutive repeats removed).
"""
from speechllm.units.kmeans import KMeans
from speechllm.units.sequences import dedup_units, format_units, read_units, write_units

__all__ = ["KMeans", "dedup_units", "format_units", "read_units", "write_units"]
