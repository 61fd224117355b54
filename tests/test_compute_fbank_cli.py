"""compute_fbank entry point: parallel shares + combine equal one job; bad audio is a counted skip."""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest

from speechllm.bin.compute_fbank import main
from speechllm.data.audio import load_audio
from speechllm.data.datadir import read_utt2dur, read_utt2num_frames
from speechllm.features.fbank import compute_fbank

from conftest import write_lines


@pytest.fixture
def dir_with_corrupt_wav(data_dir: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "wav" / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with (data_dir / "wav.scp").open("a") as f:
        f.write(f"spkC-bad {bad}\n")  # line 5
    return data_dir


def load_feats(out: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in kaldiio.load_scp(str(out / "feats.scp")).items()}


def test_two_jobs_plus_combine_equal_one_job(dir_with_corrupt_wav: Path, tmp_path: Path):
    d, one, two = dir_with_corrupt_wav, tmp_path / "one", tmp_path / "two"
    assert main(["--data_dir", str(d), "--out_dir", str(one), "--write_utt2dur"]) == 0
    for job in ("1", "2"):
        assert main(["--data_dir", str(d), "--out_dir", str(two), "--nj", "2", "--job", job, "--write_utt2dur"]) == 0
    assert not (two / "feats.scp").exists()
    assert main(["--out_dir", str(two), "--combine", "2"]) == 0

    feats_one, feats_two = load_feats(one), load_feats(two)
    assert sorted(feats_one) == ["spkA-utt1", "spkA-utt2", "spkB-utt1", "spkB-utt2"]
    assert feats_one.keys() == feats_two.keys()
    for utt in feats_one:
        np.testing.assert_array_equal(feats_one[utt], feats_two[utt])
    assert read_utt2num_frames(one / "utt2num_frames") == read_utt2num_frames(two / "utt2num_frames")
    assert read_utt2num_frames(one / "utt2num_frames")["spkB-utt1"] == feats_one["spkB-utt1"].shape[0] == 148
    assert read_utt2dur(two / "utt2dur")["spkA-utt2"] == pytest.approx(1.0)
    assert (one / "skipped.txt").read_text() == (two / "skipped.txt").read_text()


def test_features_equal_compute_fbank_of_loaded_audio(data_dir: Path, tmp_path: Path):
    assert main(["--data_dir", str(data_dir), "--out_dir", str(tmp_path / "o"), "--num_mel_bins", "40"]) == 0
    wave, sr = load_audio(str(tmp_path / "wav" / "spkA-utt2.wav"))
    np.testing.assert_array_equal(load_feats(tmp_path / "o")["spkA-utt2"], compute_fbank(wave, sr, num_mel_bins=40).numpy())


def test_corrupt_wav_is_a_counted_skip_listed_with_its_wav_scp_line(dir_with_corrupt_wav: Path, tmp_path: Path, capsys):
    out = tmp_path / "o"
    assert main(["--data_dir", str(dir_with_corrupt_wav), "--out_dir", str(out), "--nj", "2", "--job", "2"]) == 0
    line = (out / "skipped.2.txt").read_text()
    assert line.startswith(f"spkC-bad\t{dir_with_corrupt_wav / 'wav.scp'}:5: cannot read audio")
    assert "fbank job 2/2: wrote 2 utterances; skipped 1 of 3 utterances (1 unreadable audio)" in capsys.readouterr().err


def test_segments_from_a_pipe_equal_segments_from_the_file(segments_dir: Path, tmp_path: Path):
    assert main(["--data_dir", str(segments_dir), "--out_dir", str(tmp_path / "plain")]) == 0
    wav = (segments_dir / "wav.scp").read_text().split()[1]
    write_lines(segments_dir / "wav.scp", [f"rec1 cat {wav} |"])
    assert main(["--data_dir", str(segments_dir), "--out_dir", str(tmp_path / "pipe")]) == 0
    plain, piped = load_feats(tmp_path / "plain"), load_feats(tmp_path / "pipe")
    assert sorted(plain) == ["rec1-a", "rec1-b"]
    for utt in plain:
        np.testing.assert_array_equal(plain[utt], piped[utt])


def test_all_skipped_or_unfinished_share_exits_1_with_message(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "o"
    assert main(["--data_dir", str(data_dir), "--out_dir", str(out), "--sample_rate", "8000"]) == 1
    assert "all 4 utterances of job 1 were skipped" in capsys.readouterr().err
    assert "sample rate 16000 Hz, expected 8000 Hz" in (out / "skipped.1.txt").read_text()
    assert main(["--data_dir", str(data_dir), "--out_dir", str(tmp_path / "p"), "--nj", "2", "--job", "1"]) == 0
    assert main(["--out_dir", str(tmp_path / "p"), "--combine", "2"]) == 1
    # the message alone (no traceback) is the last line of stderr, after the log lines
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"compute_fbank: {tmp_path / 'p' / 'feats.2.scp'}: missing: job 2 of 2 has not finished"
    assert not any("Traceback" in line for line in err)
