"""load_audio: plain paths, pipes, segments, channel choice and clear error messages."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.data.audio import AudioError, audio_duration, compute_utt2dur, load_audio


def test_plain_path_gives_float32_mono_in_unit_range(make_wav):
    path = make_wav("a.wav", 0.5)
    wave, sr = load_audio(str(path))
    ref, _ = sf.read(path, dtype="float32")
    assert sr == 16000 and wave.dtype == np.float32 and wave.shape == (8000,)
    np.testing.assert_array_equal(wave, ref)
    assert np.abs(wave).max() < 1.0


def test_pipe_output_equals_file(make_wav):
    path = make_wav("a.wav", 0.5)
    wave, sr = load_audio(f"cat {path} |")
    ref, _ = load_audio(str(path))
    assert sr == 16000
    np.testing.assert_array_equal(wave, ref)


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_sox_pipe_to_stdout_is_readable(make_wav):
    path = make_wav("a.wav", 0.5)
    wave, sr = load_audio(f"sox {path} -t wav - |")
    np.testing.assert_allclose(wave, load_audio(str(path))[0], atol=1e-4)


def test_segment_cuts_the_right_samples_from_file_and_pipe(make_wav):
    path = make_wav("a.wav", 1.0)
    full, _ = load_audio(str(path))
    for entry in (str(path), f"cat {path} |"):
        seg, sr = load_audio(entry, segment=(0.25, 0.5))
        np.testing.assert_array_equal(seg, full[4000:8000])


def test_segment_overshoot_is_clipped_but_far_past_end_is_an_error(make_wav):
    path = make_wav("a.wav", 1.0)
    seg, _ = load_audio(str(path), segment=(0.5, 1.2))
    assert seg.shape == (8000,)
    with pytest.raises(AudioError, match=r"segment 0.5-2.0 s is past the end of the audio \(1.000 s\)"):
        load_audio(str(path), segment=(0.5, 2.0))


def test_multichannel_returns_first_channel(make_wav):
    path = make_wav("st.wav", 0.2, channels=2)
    wave, _ = load_audio(str(path))
    both, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(wave, both[:, 0])


def test_sample_rate_mismatch_is_an_error(make_wav):
    path = make_wav("a8k.wav", 0.2, sr=8000)
    with pytest.raises(AudioError, match=rf"{path}: sample rate 8000 Hz, expected 16000 Hz"):
        load_audio(str(path), expected_sr=16000)
    with pytest.raises(AudioError, match=r"sample rate 8000 Hz, expected 16000 Hz"):
        load_audio(f"cat {path} |", expected_sr=16000)


def test_missing_file_message(tmp_path: Path):
    with pytest.raises(AudioError, match=rf"audio file not found: {tmp_path}/nope.wav"):
        load_audio(str(tmp_path / "nope.wav"))


def test_corrupt_file_message(tmp_path: Path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=rf"cannot read audio {bad}"):
        load_audio(str(bad))


def test_failed_pipe_reports_exit_code_and_stderr(tmp_path: Path):
    with pytest.raises(AudioError, match=r"pipe failed with exit code 1: .*: cat: .*missing.wav"):
        # pipefail: the failing first stage is caught even though the last one succeeds
        load_audio(f"cat {tmp_path}/missing.wav | cat |")


def test_empty_pipe_output_is_an_error():
    with pytest.raises(AudioError, match=r"pipe produced no output: 'true'"):
        load_audio("true |")


def test_pipe_output_that_is_not_audio_is_an_error():
    with pytest.raises(AudioError, match=r"output is not readable audio"):
        load_audio("echo hello |")


def test_durations_from_header_and_from_segments(make_wav):
    a, b = make_wav("a.wav", 0.5), make_wav("b.wav", 1.25)
    assert audio_duration(str(a)) == pytest.approx(0.5)
    assert audio_duration(f"cat {b} |") == pytest.approx(1.25)
    durs, failures = compute_utt2dur({"a": str(a), "b": str(b), "c": "/nope.wav"})
    assert durs == {"a": pytest.approx(0.5), "b": pytest.approx(1.25)}
    assert failures == {"c": "audio file not found: /nope.wav"}
    durs, _ = compute_utt2dur({"r": str(a)}, {"u1": ("r", 0.1, 0.4)})
    assert durs == {"u1": pytest.approx(0.3)}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_espeak_ng_speech_through_a_pipe():
    wave, sr = load_audio('espeak-ng --stdout "hello world" |')
    assert sr == 22050 and 0.5 < len(wave) / sr < 3.0 and np.abs(wave).max() > 0.1
