"""Raw-audio training input: RawAudioDataset, 1-D collation, the ``input`` key, batch_bins in frames."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import UTTS, write_lines
from fake_encoders import fake_encoders  # noqa: F401  (fixture)
from speechllm.data.audio import AudioError
from speechllm.data.dataset import ASRDataset, RawAudioDataset, collate_asr, pad_sequences
from speechllm.tasks.asr import build_dataset, resolve_input
from speechllm.train.trainer import _bin_lengths
from speechllm.utils.config import ConfigError


class CharCodes:
    """A stand-in tokenizer: one id per character."""

    def encode(self, text: str) -> list[int]:
        return [2 + ord(c) % 50 for c in text]


def test_items_are_waveforms_with_token_ids(data_dir: Path):
    ds = RawAudioDataset(data_dir, CharCodes())
    assert ds.utt_ids == sorted(UTTS)
    item = ds[0]
    wave, sr = sf.read(data_dir.parent / "wav" / "spkA-utt1.wav", dtype="float32")
    assert item["utt_id"] == "spkA-utt1" and item["feats"].dtype == torch.float32
    assert item["feats"].shape == (8000,) and sr == 16000
    torch.testing.assert_close(item["feats"], torch.from_numpy(wave))
    assert item["ys"].tolist() == CharCodes().encode("hello world")


def test_lengths_are_samples_from_utt2dur_or_measured(data_dir: Path):
    measured = RawAudioDataset(data_dir, CharCodes()).lengths  # no utt2dur: audio headers
    assert measured == [round(UTTS[u][1] * 16000) for u in sorted(UTTS)]
    write_lines(data_dir / "utt2dur", [f"{u} {d + 0.01}" for u, (_, d, _) in sorted(UTTS.items())])
    ds = RawAudioDataset(data_dir, CharCodes())
    assert ds.lengths == [round((UTTS[u][1] + 0.01) * 16000) for u in sorted(UTTS)]
    assert ds.length_per_bin == 160  # samples per 10 ms frame


def test_segments_are_cut_from_their_recording(segments_dir: Path):
    ds = RawAudioDataset(segments_dir, CharCodes())
    assert ds.utt_ids == ["rec1-a", "rec1-b"]
    assert ds.lengths == [round(1.2 * 16000), round(1.5 * 16000)]  # end - start, no audio opened
    assert [ds[i]["feats"].shape[0] for i in range(2)] == ds.lengths


def test_utterances_without_text_are_counted(data_dir: Path, caplog):
    write_lines(data_dir / "text", ["spkA-utt1 hello world", "spkA-utt2 the quick brown fox", "zz-utt extra"])
    ds = RawAudioDataset(data_dir, CharCodes())
    assert ds.utt_ids == ["spkA-utt1", "spkA-utt2"]
    assert (ds.num_missing_text, ds.num_missing_audio) == (2, 1)
    assert "skipped 3 of 5 utterances" in caplog.text


def test_wrong_sample_rate_names_the_wav_scp_line(data_dir: Path):
    ds = RawAudioDataset(data_dir, CharCodes(), sample_rate=8000)
    with pytest.raises(AudioError, match=r"wav.scp:1: .*sample rate 16000 Hz, expected 8000 Hz"):
        ds[0]


def test_dataset_pickles_for_workers(segments_dir: Path):
    ds = RawAudioDataset(segments_dir, CharCodes())
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[1]["feats"], ds[1]["feats"])


def test_collate_pads_waveforms_into_b_by_s(data_dir: Path):
    ds = RawAudioDataset(data_dir, CharCodes())
    batch = collate_asr([ds[0], ds[2]])
    assert batch["feats"].shape == (2, 24000)
    assert batch["feats_lens"].tolist() == [8000, 24000]
    assert batch["feats"][0, 8000:].abs().sum() == 0
    assert batch["ys"].shape[0] == 2 and batch["ys"][0, -1] == -1


def test_pad_sequences_keeps_trailing_dims():
    x, lens = pad_sequences([torch.ones(2, 3), torch.ones(4, 3)])
    assert x.shape == (2, 4, 3) and lens.tolist() == [2, 4] and x[0, 2:].sum() == 0


def test_batch_bins_count_10ms_frames_for_raw_audio(data_dir: Path):
    ds = RawAudioDataset(data_dir, CharCodes())
    assert _bin_lengths(ds) == [-(-n // 160) for n in ds.lengths] == [50, 100, 150, 80]

    class Frames:
        lengths = [7, 12]

    assert _bin_lengths(Frames()) == [7, 12]  # feature datasets: lengths are frames already


def test_input_defaults_from_the_encoder_kind(fake_encoders):  # noqa: F811
    assert resolve_input({"encoder": "conformer"}) == "fbank"
    assert resolve_input({"encoder": "fake_ssl"}) == "raw"
    assert resolve_input({"encoder": "precomputed", "input": "dumped"}) == "dumped"


@pytest.mark.parametrize("config, message", [
    ({"encoder": "fake_ssl", "input": "fbank"}, "does not fit encoder 'fake_ssl'"),
    ({"encoder": "conformer", "input": "raw"}, "does not fit encoder 'conformer'"),
    ({"encoder": "fake_ssl", "specaug": True}, "specaug: null"),
    ({"encoder": "fake_ssl", "normalize": "global_mvn"}, "normalize: null"),
    ({"encoder": "conformer", "input": "audio"}, "unknown choice 'audio'"),
])
def test_input_mismatches_are_config_errors(fake_encoders, config, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        resolve_input(config)


def test_build_dataset_picks_the_reader(fake_encoders, data_dir: Path, tmp_path: Path):  # noqa: F811
    raw = build_dataset({"encoder": "fake_ssl", "input_conf": {"sample_rate": 16000}}, data_dir, CharCodes())
    assert isinstance(raw, RawAudioDataset)
    with pytest.raises(ConfigError, match="input_conf: unknown option"):
        build_dataset({"encoder": "fake_ssl", "input_conf": {"rate": 16000}}, data_dir, CharCodes())

    import kaldiio

    d = tmp_path / "dumped"
    d.mkdir()
    kaldiio.save_ark(str(d / "feats.ark"), {"u1": np.zeros((5, 8), np.float32)}, scp=str(d / "feats.scp"))
    write_lines(d / "text", ["u1 ab"])
    write_lines(d / "dump_info.yaml", ["dim: 8", "encoder: fake_ssl", "layer: 1"])
    config = {"encoder": "precomputed", "input": "dumped", "input_size": 8}
    assert isinstance(build_dataset(config, d, CharCodes()), ASRDataset)
    with pytest.raises(ConfigError, match="input_size 16 does not match the dumped features.*dim 8"):
        build_dataset({**config, "input_size": 16}, d, CharCodes())


def test_decoding_reads_the_job_share_of_wav_scp(segments_dir: Path, data_dir: Path):
    from speechllm.bin.asr_inference import audio_inputs

    seg = audio_inputs(segments_dir, nj=2, job=2, sample_rate=16000)  # no utt2dur: segment bounds
    assert seg.utt_ids == ["rec1-b"] and seg.lengths == {"rec1-b": 24000}
    assert seg.load("rec1-b").shape == (24000,) and seg.seconds_per_unit == 1 / 16000
    plain = audio_inputs(data_dir, nj=1, job=1, sample_rate=16000)  # no utt2dur: audio headers
    assert plain.lengths == {u: round(d * 16000) for u, (_, d, _) in UTTS.items()}
    with pytest.raises(AudioError, match=r"wav.scp:1: .*expected 8000 Hz"):
        audio_inputs(data_dir, nj=1, job=1, sample_rate=8000).load("spkA-utt1")
