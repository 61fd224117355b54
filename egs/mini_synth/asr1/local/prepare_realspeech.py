#!/usr/bin/env python3
"""Real human speech test sets from the shared data folder (read in place, never copied).

    local/prepare_realspeech.py --realspeech_dir ../../../../shared/data/realspeech --data_dir data

Makes ``data/test_real_librivox``, ``test_real_librispeech``, ``test_real_ljspeech`` and
``test_real_jfk`` (English only) with normalized transcripts. Audio that is already 16 kHz
mono is listed by path; anything else (LJSpeech 22.05 kHz, JFK 44.1 kHz stereo) becomes a
``sox <file> -r 16000 -c 1 -b 16 -t wav - |`` pipe. When the folder is absent, it says so
and exits 0: these rows are extra evaluation, not a requirement.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Callable

import soundfile as sf

from speechllm.data.datadir import DataDir, DataDirError, read_text, write_data_dir
from speechllm.text.normalizer import normalize_text
from speechllm.utils.logging_utils import setup_logging

log = logging.getLogger("prepare_realspeech")
TARGET_SR = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
DATA_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur")

# data dir name -> (folder under realspeech, speaker id of an original utterance id)
REAL_SETS: dict[str, tuple[str, Callable[[str], str]]] = {
    "test_real_librivox": ("librivox", lambda utt: "librivox_austen"),
    "test_real_librispeech": ("librispeech", lambda utt: f"librispeech_{utt.split('-')[0]}"),
    "test_real_ljspeech": ("ljspeech", lambda utt: "ljspeech_lj"),
    "test_real_jfk": ("jfk", lambda utt: "jfk"),
}


def find_audio(folder: Path, utt: str) -> Path | None:
    """The audio file of an utterance: ``<folder>/<utt>.{wav,flac,ogg}``."""
    for suffix in AUDIO_SUFFIXES:
        path = folder / f"{utt}{suffix}"
        if path.is_file():
            return path
    return None


def wav_scp_entry(path: Path) -> tuple[str, float]:
    """``(wav.scp entry, duration in s)``: the path when already 16 kHz mono, else a sox pipe."""
    info = sf.info(str(path))
    path = path.resolve()
    if info.samplerate == TARGET_SR and info.channels == 1:
        entry = str(path)
    else:
        entry = f"sox {shlex.quote(str(path))} -r {TARGET_SR} -c 1 -b 16 -t wav - |"
    return entry, info.frames / info.samplerate


def prepare_set(src: Path, speaker_of: Callable[[str], str], out_dir: Path) -> tuple[int, list[str]]:
    """Write one data dir from ``src/text`` and its audio; returns ``(utterances, problems)``."""
    text = read_text(src / "text")
    dd = DataDir(wav_scp={}, text={}, utt2spk={}, utt2dur={})
    problems = []
    for utt, transcript in text.items():
        audio = find_audio(src, utt)
        if audio is None:
            problems.append(f"{utt}: no audio file {utt}{{{','.join(AUDIO_SUFFIXES)}}} in {src}")
            continue
        norm = normalize_text(transcript)
        if not norm:
            problems.append(f"{utt}: empty transcript after normalization")
            continue
        spk = speaker_of(utt)
        utt_id = f"{spk}-{utt}"
        dd.wav_scp[utt_id], dd.utt2dur[utt_id] = wav_scp_entry(audio)
        dd.text[utt_id] = norm
        dd.utt2spk[utt_id] = spk
    write_data_dir(dd, out_dir)
    return len(dd.text), problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--realspeech_dir", required=True)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--sets", default=",".join(REAL_SETS), help="comma-separated data dir names to make")
    args = p.parse_args(argv)
    setup_logging()
    root = Path(args.realspeech_dir)
    if not root.is_dir():
        log.info("skip: no real speech at %s (the shared data folder's README lists it); only synthetic "
                 "test sets will be made", root)
        return 0
    for name in [s for s in args.sets.split(",") if s]:
        if name not in REAL_SETS:
            log.error("unknown set %s; known: %s", name, ", ".join(REAL_SETS))
            return 1
        folder, speaker_of = REAL_SETS[name]
        src, out_dir = root / folder, Path(args.data_dir) / name
        if not (src / "text").is_file():
            log.info("skip %s: %s/text not found", name, src)
            continue
        if all((out_dir / f).is_file() for f in DATA_FILES) and \
                (out_dir / "text").stat().st_mtime >= (src / "text").stat().st_mtime:
            log.info("skip %s: %s already made", name, out_dir)
            continue
        try:
            n, problems = prepare_set(src, speaker_of, out_dir)
        except DataDirError as e:
            log.error("%s", e)
            return 1
        for msg in problems:
            log.warning("%s: skipped %s", name, msg)
        total = n + len(problems)
        log.info("wrote %s/%s: %d of %d utterances from %s%s", args.data_dir, name, n, total, src,
                 f" (skipped {len(problems)}, listed above)" if problems else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
