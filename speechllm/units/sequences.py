"""Unit sequences as Kaldi-style text files: ``utt-id u1 u2 u3 ...`` (one utterance a line).

``units`` keeps one unit per encoder frame; ``units_dedup`` removes consecutive repeats
(``5 5 5 9 9 5`` -> ``5 9 5``), the usual input of unit-based language models and vocoders.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

from speechllm.data.datadir import read_table, write_table


def dedup_units(units: Sequence[int]) -> list[int]:
    """Drop every unit equal to the one before it (run-length collapse, counts discarded)."""
    return [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def format_units(units: Iterable[int]) -> str:
    """``"5 9 5"``."""
    return " ".join(str(int(u)) for u in units)


def _parse_units(rest: str) -> list[int]:
    try:
        return [int(u) for u in rest.split()]
    except ValueError:
        raise ValueError(f"not a sequence of integers: '{rest[:40]}'") from None


def read_units(path: str | os.PathLike) -> dict[str, list[int]]:
    """``{utt_id: [unit, ...]}`` of a units file; bad lines raise ``DataDirError`` naming the line."""
    return {k: v for k, (_, v) in read_table(path, _parse_units).items()}


def write_units(path: str | os.PathLike, units: Mapping[str, Sequence[int]]) -> None:
    """Write ``utt_id u1 u2 ...`` lines sorted by id (atomically)."""
    write_table(path, units, format_units)
