"""Kaldi data directories, audio loading, the ASR dataset and its collate function.

The dataset lives in :mod:`speechllm.data.dataset` (imports torch); this package root only
re-exports the light-weight data-dir and audio helpers.
"""
from speechllm.data.audio import AudioError, load_audio
from speechllm.data.datadir import DataDir, DataDirError, load_data_dir, validate_data_dir, write_data_dir

__all__ = ["AudioError", "DataDir", "DataDirError", "load_audio", "load_data_dir", "validate_data_dir", "write_data_dir"]
