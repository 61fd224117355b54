"""Load audio named by a ``wav.scp`` entry: a file path, or a shell pipe ending in ``|``.

Everything is read through ``soundfile`` (torchaudio.load would need torchcodec). A pipe
such as ``sox in.flac -t wav - speed 0.9 |`` is run with ``bash -o pipefail`` so that a
failure anywhere in the pipeline is caught, and its stdout is decoded from memory.

Errors raise :class:`AudioError` with a message that names the entry; callers that know
the ``wav.scp`` line prefix it (``"data/train/wav.scp:12: ..."``).
"""
from __future__ import annotations

import io
import os
import subprocess
from typing import Mapping

import numpy as np
import soundfile as sf

# A segment may end a little past the end of its recording (rounding in the segments
# file); Kaldi's extract-segments tolerates 0.5 s of overshoot, so do we, and clip.
MAX_SEGMENT_OVERSHOOT_S = 0.5


class AudioError(ValueError):
    """Audio that cannot be used: missing, unreadable, failed pipe, wrong sample rate."""


def is_pipe(entry: str) -> bool:
    """True for a wav.scp entry that is a shell command whose stdout is the audio."""
    return entry.rstrip().endswith("|")


def run_pipe(entry: str) -> bytes:
    """Run the command of a pipe entry (``"cmd ... |"``) and return its stdout bytes."""
    cmd = entry.rstrip()[:-1].strip()
    if not cmd:
        raise AudioError(f"empty command in pipe entry '{entry}'")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = stderr[-1] if stderr else "no stderr"
        raise AudioError(f"pipe failed with exit code {proc.returncode}: '{cmd}': {detail}")
    if not proc.stdout:
        raise AudioError(f"pipe produced no output: '{cmd}'")
    return proc.stdout


def _first_channel(data: np.ndarray) -> np.ndarray:
    # always_2d gives [T, C]; multi-channel audio is reduced to its first channel (not a
    # mix), as Kaldi does by default, so that e.g. a reference microphone stays clean.
    return np.ascontiguousarray(data[:, 0], dtype=np.float32)


def _segment_frames(segment: tuple[float, float], sr: int, total: int, name: str) -> tuple[int, int]:
    start_s, end_s = segment
    if not 0 <= start_s < end_s:
        raise AudioError(f"{name}: invalid segment {start_s}-{end_s} s (need 0 <= start < end)")
    start, end = int(round(start_s * sr)), int(round(end_s * sr))
    if start >= total or end > total + MAX_SEGMENT_OVERSHOOT_S * sr:
        raise AudioError(
            f"{name}: segment {start_s}-{end_s} s is past the end of the audio ({total / sr:.3f} s)"
        )
    return start, min(end, total)


def cut_segment(wave: np.ndarray, sr: int, segment: tuple[float, float], name: str = "audio") -> np.ndarray:
    """Samples ``[start, end)`` seconds of ``wave`` (first axis); ``name`` goes into errors.

    An end up to 0.5 s past the audio is clipped (rounding in segments files); more, or a
    start at/after the end, raises :class:`AudioError`.
    """
    start, end = _segment_frames(segment, sr, wave.shape[0], name)
    return wave[start:end]


def _check_sr(sr: int, expected_sr: int | None, name: str) -> None:
    if expected_sr is not None and sr != expected_sr:
        raise AudioError(f"{name}: sample rate {sr} Hz, expected {expected_sr} Hz")


def load_audio(
    entry: str,
    segment: tuple[float, float] | None = None,
    expected_sr: int | None = None,
) -> tuple[np.ndarray, int]:
    """Load a wav.scp entry as mono float32 samples in [-1, 1].

    Args:
        entry: a file path, or a shell command ending in ``|`` whose stdout is audio
            in a format soundfile reads (wav, flac, ...).
        segment: optional ``(start, end)`` in seconds to cut out (a ``segments`` line).
        expected_sr: if given, a different sample rate is an error (no silent resampling).

    Returns:
        ``(samples, sample_rate)``; multi-channel audio gives its first channel.

    Raises:
        AudioError: missing file, failed or empty pipe, undecodable audio, rate mismatch,
            or a segment outside the audio.
    """
    if is_pipe(entry):
        name = f"pipe '{entry.rstrip()[:-1].strip()}'"
        data_bytes = run_pipe(entry)
        try:
            data, sr = sf.read(io.BytesIO(data_bytes), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise AudioError(f"{name}: output is not readable audio: {e}") from None
        _check_sr(sr, expected_sr, name)
        if segment is not None:
            data = cut_segment(data, sr, segment, name)
        return _first_channel(data), sr

    path = entry.strip()
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            _check_sr(sr, expected_sr, path)
            if segment is not None:
                # seek to the segment instead of decoding the whole (possibly long) recording
                start, end = _segment_frames(segment, sr, f.frames, path)
                f.seek(start)
                data = f.read(end - start, dtype="float32", always_2d=True)
            else:
                data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"cannot read audio {path}: {e}") from None
    return _first_channel(data), sr


def audio_duration(entry: str) -> float:
    """Duration in seconds of a wav.scp entry; plain files only read the header."""
    if is_pipe(entry):
        data, sr = load_audio(entry)
        return data.shape[0] / sr
    path = entry.strip()
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"cannot read audio {path}: {e}") from None
    if info.samplerate <= 0:
        raise AudioError(f"cannot read audio {path}: sample rate {info.samplerate}")
    return info.frames / info.samplerate


def compute_utt2dur(
    wav_scp: Mapping[str, str],
    segments: Mapping[str, tuple[str, float, float]] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Durations of all utterances of a data dir.

    With ``segments`` the duration is ``end - start`` (no audio is opened, as in Kaldi);
    otherwise each wav.scp entry is measured with :func:`audio_duration`.

    Returns:
        ``(utt2dur, failures)``; ``failures`` maps utterance id to the error message for
        entries that could not be measured, so that the caller can drop and report them.
    """
    utt2dur: dict[str, float] = {}
    failures: dict[str, str] = {}
    if segments is not None:
        for utt, (_, start, end) in segments.items():
            utt2dur[utt] = max(0.0, end - start)
        return utt2dur, failures
    for utt, entry in wav_scp.items():
        try:
            utt2dur[utt] = audio_duration(entry)
        except AudioError as e:
            failures[utt] = str(e)
    return utt2dur, failures
