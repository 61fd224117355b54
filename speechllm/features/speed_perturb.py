"""Speed perturbation as a data-dir stage (Ko et al., 2015), the Kaldi way.

No audio is written: each ``wav.scp`` entry becomes a ``sox ... speed f |`` pipe that
:func:`speechllm.data.audio.load_audio` runs when features are computed. Utterance,
speaker and recording ids get an ``sp{f}-`` prefix (``sp0.9-utt1``) so the copies never
clash with the originals, and speakers stay separate for per-speaker statistics. Times
shrink by ``f``: segment boundaries and ``utt2dur`` are divided by ``f``.

Factor 1.0 keeps the original ids and entries (as Kaldi's and ESPnet's 3-way
perturbation do), so the combined dir contains the untouched data under its own names.
"""
from __future__ import annotations

import logging
import shlex
from typing import Iterable

from speechllm.data.audio import is_pipe
from speechllm.data.datadir import DataDir, PathLike, Segment, load_data_dir, write_data_dir
from speechllm.data.fix_datadir import merge_data_dirs

logger = logging.getLogger(__name__)


def speed_prefix(factor: float) -> str:
    """``"sp0.9-"`` for 0.9; ``""`` for 1.0."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def sox_speed_entry(entry: str, factor: float) -> str:
    """A wav.scp entry whose audio is ``entry`` played at ``factor`` times the speed.

    A plain path becomes ``sox PATH -t wav - speed f |``; a pipe ``cmd |`` becomes
    ``cmd | sox -t wav - -t wav - speed f |`` (the pipe's output is wav by convention).
    sox resamples back to the input rate after ``speed``.
    """
    if is_pipe(entry):
        cmd = entry.rstrip()[:-1].rstrip()
        return f"{cmd} | sox -t wav - -t wav - speed {factor:g} |"
    return f"sox {shlex.quote(entry.strip())} -t wav - speed {factor:g} |"


def perturb_data_dir(dd: DataDir, factor: float) -> DataDir:
    """An in-memory speed-perturbed copy of ``dd``.

    ``feats.scp`` and ``utt2num_frames`` are not carried over (even for factor 1.0, so that
    all copies have the same files): features must be computed on the perturbed audio.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    p = speed_prefix(factor)
    out = DataDir(path=dd.path)
    if dd.wav_scp is not None:
        out.wav_scp = {p + rec: sox_speed_entry(e, factor) if p else e for rec, e in dd.wav_scp.items()}
    if dd.segments is not None:
        out.segments = {p + u: Segment(p + s.rec_id, s.start / factor, s.end / factor) for u, s in dd.segments.items()}
    if dd.text is not None:
        out.text = {p + u: t for u, t in dd.text.items()}
    if dd.utt2spk is not None:
        out.utt2spk = {p + u: p + s for u, s in dd.utt2spk.items()}
    if dd.utt2dur is not None:
        out.utt2dur = {p + u: d / factor for u, d in dd.utt2dur.items()}
    return out


def speed_perturb_data_dir(src: PathLike, dst: PathLike, factors: Iterable[float] = (0.9, 1.0, 1.1)) -> DataDir:
    """Write ``src`` perturbed by each of ``factors`` into one combined dir ``dst``; returns it."""
    factors = list(factors)
    if not factors or len(set(factors)) != len(factors):
        raise ValueError(f"need distinct speed factors, got {factors}")
    dd = load_data_dir(src)
    left_out = [n for n, t in (("feats.scp", dd.feats_scp), ("utt2num_frames", dd.utt2num_frames)) if t is not None]
    if left_out:
        logger.info("speed perturbation: %s not carried over (compute features on %s)", ", ".join(left_out), dst)
    out = merge_data_dirs([perturb_data_dir(dd, f) for f in factors])
    write_data_dir(out, dst)
    logger.info(
        "speed perturbation x%s: %s -> %s utterances in %s",
        "/".join(f"{f:g}" for f in factors), f"{len(dd.utt_ids):,}", f"{len(out.utt_ids):,}", dst,
    )
    return out
