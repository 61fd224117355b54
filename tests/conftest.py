"""Shared fixtures: tiny audio files and Kaldi data dirs made on the fly (numpy + soundfile), and
the tiny run of egs/mini_synth/asr1 that the recipe tests build on (``asr_run``, once per session)."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(autouse=True)
def restore_root_logger():
    """Entry points call setup_logging() (basicConfig(force=True)), which replaces the root
    logger's handlers with one bound to the test's captured stderr; put the old ones back so
    later tests neither lose caplog nor log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_tone(path: Path, seconds: float, sr: int = 16000, freq: float = 440.0, channels: int = 1, seed: int = 0) -> Path:
    """A 16-bit wav: a sine tone plus a little noise (so fbank has no log(0) bins)."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    if channels > 1:
        # channel c is scaled by 1/(c+1), so a test can tell which channel came back
        wave = np.stack([wave / (c + 1) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, subtype="PCM_16")
    return path


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    """``make_wav(name, seconds, sr=16000, freq=440, channels=1)`` -> path under tmp_path/wav."""

    def make(name: str, seconds: float, **kw) -> Path:
        return write_tone(tmp_path / "wav" / name, seconds, **kw)

    return make


# utt id -> (speaker, seconds, transcript); ids sorted, two speakers
UTTS = {
    "spkA-utt1": ("spkA", 0.5, "hello world"),
    "spkA-utt2": ("spkA", 1.0, "the quick brown fox"),
    "spkB-utt1": ("spkB", 1.5, "speech recognition is fun"),
    "spkB-utt2": ("spkB", 0.8, "hello fox"),
}


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A valid data dir of 4 utterances (wav.scp with plain paths, text, utt2spk, spk2utt)."""
    d = tmp_path / "data"
    d.mkdir()
    wav_lines, text, utt2spk = [], [], []
    for i, (utt, (spk, dur, words)) in enumerate(UTTS.items()):
        wav = write_tone(tmp_path / "wav" / f"{utt}.wav", dur, freq=300 + 100 * i, seed=i)
        wav_lines.append(f"{utt} {wav}")
        text.append(f"{utt} {words}")
        utt2spk.append(f"{utt} {spk}")
    write_lines(d / "wav.scp", wav_lines)
    write_lines(d / "text", text)
    write_lines(d / "utt2spk", utt2spk)
    write_lines(d / "spk2utt", ["spkA spkA-utt1 spkA-utt2", "spkB spkB-utt1 spkB-utt2"])
    return d


@pytest.fixture
def segments_dir(tmp_path: Path) -> Path:
    """A data dir with one 3 s recording cut into 2 segments."""
    d = tmp_path / "seg"
    d.mkdir()
    wav = write_tone(tmp_path / "wav" / "rec1.wav", 3.0)
    write_lines(d / "wav.scp", [f"rec1 {wav}"])
    write_lines(d / "segments", ["rec1-a rec1 0.0 1.2", "rec1-b rec1 1.5 3.0"])
    write_lines(d / "text", ["rec1-a hello world", "rec1-b good bye"])
    write_lines(d / "utt2spk", ["rec1-a rec1", "rec1-b rec1"])
    write_lines(d / "spk2utt", ["rec1 rec1-a rec1-b"])
    return d


# The tiny run of egs/mini_synth/asr1 that the recipe tests of asr1, sllm1 and mtbi1 build on.
MINI_ASR_RECIPE = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "asr1"
TINY_MODEL = (
    "--max_epoch 2 --batch_bins 4000 --num_workers 0 --keep_nbest_models 2 "
    "--encoder_conf.output_size 32 --encoder_conf.linear_units 64 --encoder_conf.num_blocks 2 "
    "--encoder_conf.interctc_layer_idx [1] "
    "--encoder_conf.attention_heads 2 --decoder_conf.linear_units 64 --decoder_conf.num_blocks 1 "
    "--decoder_conf.attention_heads 2 --scheduler_conf.warmup_steps 5"
)


@pytest.fixture(scope="session")
def asr_run(tmp_path_factory):
    """The tiny asr1 run (every stage but the LM's; 16/4/4 utterances, speed perturbation, char
    tokens, a tiny Conformer), made once per session: (output dir, its command, the finished process)."""
    out = tmp_path_factory.mktemp("asr1")
    cmd = [
        "./run.sh", "--nj", "2", "--inference_nj", "2",
        "--data_dir", f"{out}/data", "--feats_dir", f"{out}/dump", "--expdir", f"{out}/exp",
        "--results_md", f"{out}/RESULTS.md", "--pack_dir", f"{out}/packed",
        "--local_data_opts", f"--tiny true --audio_dir {out}/audio --realspeech_dir {out}/no_realspeech",
        "--test_sets", "test", "--token_type", "char", "--nbpe", "40",
        "--min_dur", "0.1", "--speed_perturb_factors", "0.9 1.0 1.1", "--use_lm", "false", "--asr_args", TINY_MODEL, "--inference_args", "--beam_size 2 --batch_size 4",
    ]
    proc = subprocess.run(cmd, cwd=MINI_ASR_RECIPE, capture_output=True, text=True, timeout=900)
    return out, cmd, proc
