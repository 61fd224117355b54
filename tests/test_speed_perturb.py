"""Speed perturbation: sox pipes in wav.scp, sp{f}- prefixes, times divided by f."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speechllm.data.audio import load_audio
from speechllm.data.datadir import load_data_dir, read_utt2dur, validate_data_dir
from speechllm.features.speed_perturb import sox_speed_entry, speed_perturb_data_dir

from conftest import write_lines

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")


def test_entries_become_sox_pipes_and_existing_pipes_are_chained():
    assert sox_speed_entry("/a b/x.wav", 0.9) == "sox '/a b/x.wav' -t wav - speed 0.9 |"
    assert sox_speed_entry("cat /x.wav |", 1.1) == "cat /x.wav | sox -t wav - -t wav - speed 1.1 |"


def test_ids_prefixed_and_factor_one_kept(data_dir: Path, tmp_path: Path):
    out = speed_perturb_data_dir(data_dir, tmp_path / "sp", [0.9, 1.0, 1.1])
    assert len(out.utt_ids) == 12
    assert {"spkA-utt1", "sp0.9-spkA-utt1", "sp1.1-spkA-utt1"} <= set(out.utt_ids)
    assert out.utt2spk["sp0.9-spkB-utt2"] == "sp0.9-spkB"
    assert out.text["sp1.1-spkB-utt1"] == out.text["spkB-utt1"]
    assert out.wav_scp["spkA-utt1"] == load_data_dir(data_dir).wav_scp["spkA-utt1"]
    assert out.wav_scp["sp0.9-spkA-utt1"].endswith("speed 0.9 |")
    assert validate_data_dir(tmp_path / "sp") == []


def test_segments_and_utt2dur_divided_by_factor(segments_dir: Path, tmp_path: Path):
    write_lines(segments_dir / "utt2dur", ["rec1-a 1.2", "rec1-b 1.5"])
    out = speed_perturb_data_dir(segments_dir, tmp_path / "sp", [0.8])
    seg = out.segments["sp0.8-rec1-b"]
    assert seg.rec_id == "sp0.8-rec1" and seg.start == pytest.approx(1.5 / 0.8) and seg.end == pytest.approx(3.0 / 0.8)
    assert read_utt2dur(tmp_path / "sp" / "utt2dur") == {"sp0.8-rec1-a": 1.5, "sp0.8-rec1-b": 1.875}
    assert list(out.wav_scp) == ["sp0.8-rec1"]


def test_feats_are_not_carried_over(data_dir: Path, tmp_path: Path):
    write_lines(data_dir / "feats.scp", [f"{u} /x.ark:{i}" for i, u in enumerate(load_data_dir(data_dir).utt_ids)])
    speed_perturb_data_dir(data_dir, tmp_path / "sp", [0.9, 1.0])
    assert not (tmp_path / "sp" / "feats.scp").exists()


@needs_sox
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_perturbed_audio_length_is_original_over_factor(data_dir: Path, tmp_path: Path, factor: float):
    out = speed_perturb_data_dir(data_dir, tmp_path / "sp", [factor])
    orig, sr = load_audio(load_data_dir(data_dir).wav_scp["spkB-utt1"])
    wave, sr2 = load_audio(out.wav_scp[f"sp{factor:g}-spkB-utt1"])
    assert sr2 == sr
    assert len(wave) == pytest.approx(len(orig) / factor, rel=0.01)


@needs_sox
def test_perturbing_a_pipe_entry_chains_sox(data_dir: Path, tmp_path: Path):
    wav = load_data_dir(data_dir).wav_scp["spkA-utt2"]
    write_lines(data_dir / "wav.scp", [f"spkA-utt2 cat {wav} |"])
    (data_dir / "utt2spk").write_text("spkA-utt2 spkA\n")
    (data_dir / "text").write_text("spkA-utt2 x\n")
    out = speed_perturb_data_dir(data_dir, tmp_path / "sp", [0.9])
    wave, sr = load_audio(out.wav_scp["sp0.9-spkA-utt2"])
    assert len(wave) == pytest.approx(16000 / 0.9, rel=0.01)


def test_speed_perturb_cli(data_dir: Path, tmp_path: Path):
    from speechllm.bin.speed_perturb import main

    assert main([str(data_dir), str(tmp_path / "sp"), "--factors", "0.9", "1.0"]) == 0
    assert len(load_data_dir(tmp_path / "sp").utt_ids) == 8
