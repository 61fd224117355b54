"""dump_encoder_features: the ark round trip equals the in-graph features; jobs, skips, dump_info;
and the precomputed encoder that trains on the dump."""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from conftest import UTTS, write_lines, write_tone
from fake_encoders import FakeSSLEncoder, fake_encoders  # noqa: F401  (fixture)
from speechllm.bin.dump_encoder_features import EncoderFeatures, main
from speechllm.data.audio import load_audio
from speechllm.data.datadir import read_feats_scp, read_utt2num_frames
from speechllm.nets.encoders.precomputed import PrecomputedEncoder
from speechllm.tasks.asr import build_encoder
from speechllm.utils.config import ConfigError

CONFIG = {"encoder": "fake_ssl", "encoder_conf": {"model_config": {"hidden_size": 8, "num_hidden_layers": 2}}}


@pytest.fixture
def encoder_yaml(tmp_path: Path, fake_encoders) -> Path:  # noqa: F811
    path = tmp_path / "enc.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "decoder": "transformer", "max_epoch": 3}))  # other keys are ignored
    return path


def in_graph(layer, data_dir: Path, utt: str, encoder: torch.nn.Module) -> np.ndarray:
    """What the training graph computes for one utterance: the encoder on [1, S] audio."""
    wave, _ = load_audio(str(data_dir.parent / "wav" / f"{utt}.wav"))
    x, lens = torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]])
    with torch.no_grad():
        if layer == "forward":
            out, out_lens = encoder(x, lens)
        else:
            states, out_lens = encoder.hidden_states(x, lens)
            out = states[-1 if layer == "last" else layer]
    return out[0, : out_lens[0]].numpy()


def dump(data_dir: Path, out: Path, encoder_yaml: Path, *extra: str) -> int:
    return main(["--data_dir", str(data_dir), "--out_dir", str(out), "--encoder_config", str(encoder_yaml), *extra])


@pytest.mark.parametrize("layer", [0, 1, "last"])
def test_float32_dump_equals_the_in_graph_layer_exactly(data_dir, tmp_path, encoder_yaml, layer):
    assert dump(data_dir, tmp_path / "out", encoder_yaml, "--layer", str(layer), "--dtype", "float32") == 0
    torch.manual_seed(0)
    encoder = build_encoder(CONFIG).eval()
    feats = read_feats_scp(tmp_path / "out" / "feats.scp")
    assert sorted(feats) == sorted(UTTS)
    for utt, rx in feats.items():
        mat = kaldiio.load_mat(rx)
        assert mat.dtype == np.float32
        np.testing.assert_array_equal(mat, in_graph(layer, data_dir, utt, encoder))


def test_float16_dump_is_within_half_precision(data_dir, tmp_path, encoder_yaml):
    assert dump(data_dir, tmp_path / "out", encoder_yaml, "--layer", "2", "--dtype", "float16") == 0
    torch.manual_seed(0)
    encoder = build_encoder(CONFIG).eval()
    for utt, rx in read_feats_scp(tmp_path / "out" / "feats.scp").items():
        mat = kaldiio.load_mat(rx)
        assert mat.dtype == np.float16
        np.testing.assert_allclose(mat.astype(np.float32), in_graph(2, data_dir, utt, encoder), rtol=2e-3, atol=2e-3)


def test_weighted_sum_uses_the_trained_layer_weights(data_dir, tmp_path, encoder_yaml):
    torch.manual_seed(1)
    trained = FakeSSLEncoder(model_config=CONFIG["encoder_conf"]["model_config"], layer="weighted_sum")
    with torch.no_grad():
        trained.layer_weights.copy_(torch.tensor([2.0, -1.0, 0.5]))
    # an ASR checkpoint: the encoder's weights under "encoder.", other modules beside them
    ckpt = tmp_path / "asr.pt"
    torch.save({"model": {**{f"encoder.{k}": v for k, v in trained.state_dict().items()},
                          "ctc.weight": torch.zeros(3)}}, ckpt)
    assert dump(data_dir, tmp_path / "out", encoder_yaml, "--layer", "weighted_sum", "--checkpoint", str(ckpt),
                "--dtype", "float32") == 0
    for utt, rx in read_feats_scp(tmp_path / "out" / "feats.scp").items():
        np.testing.assert_allclose(kaldiio.load_mat(rx), in_graph("forward", data_dir, utt, trained.eval()), rtol=1e-6)


def test_jobs_and_combine_equal_one_job(data_dir, tmp_path, encoder_yaml):
    assert dump(data_dir, tmp_path / "one", encoder_yaml, "--dtype", "float32") == 0
    for job in (1, 2):
        assert dump(data_dir, tmp_path / "two", encoder_yaml, "--dtype", "float32", "--nj", "2", "--job", str(job)) == 0
    assert not (tmp_path / "two" / "feats.scp").exists()
    assert main(["--out_dir", str(tmp_path / "two"), "--combine", "2"]) == 0
    one, two = (read_feats_scp(tmp_path / d / "feats.scp") for d in ("one", "two"))
    assert sorted(one) == sorted(two) == sorted(UTTS)
    for utt in one:
        np.testing.assert_array_equal(kaldiio.load_mat(one[utt]), kaldiio.load_mat(two[utt]))
    frames = read_utt2num_frames(tmp_path / "two" / "utt2num_frames")
    assert frames == {u: (round(d * 16000) - 400) // 320 + 1 for u, (_, d, _) in UTTS.items()}


def test_dump_info_records_encoder_layer_dtype_and_frame_rate(data_dir, tmp_path, encoder_yaml):
    assert dump(data_dir, tmp_path / "out", encoder_yaml, "--layer", "1") == 0
    info = yaml.safe_load((tmp_path / "out" / "dump_info.yaml").read_text())
    assert info["encoder"] == "fake_ssl" and info["layer"] == 1 and info["dtype"] == "float16"
    assert info["dim"] == 8 and info["frame_rate"] == 50.0 and info["input_kind"] == "waveform"
    assert info["encoder_config"] == str(encoder_yaml) and info["checkpoint"] is None


def test_unreadable_and_short_audio_are_skipped_and_counted(data_dir, tmp_path, encoder_yaml, capfd):
    short = write_tone(tmp_path / "wav" / "short.wav", 0.05)
    write_lines(data_dir / "wav.scp", (data_dir / "wav.scp").read_text().splitlines()
                + ["zz-missing /no/such.wav", f"zz-short {short}"])
    assert dump(data_dir, tmp_path / "out", encoder_yaml) == 0
    assert sorted(read_feats_scp(tmp_path / "out" / "feats.scp")) == sorted(UTTS)
    skipped = (tmp_path / "out" / "skipped.txt").read_text()
    assert "zz-missing\t" in skipped and "wav.scp:5: audio file not found" in skipped
    assert "zz-short\t" in skipped and "0.050 s < 0.1 s" in skipped
    assert "skipped 2 of 6 utterances (1 unreadable audio, 1 too short)" in capfd.readouterr().err


def test_layer_out_of_range_is_a_config_error(data_dir, tmp_path, encoder_yaml, capsys):
    assert dump(data_dir, tmp_path / "out", encoder_yaml, "--layer", "7") == 1
    assert "--layer 7: encoder fake_ssl has 3 hidden states (0..2)" in capsys.readouterr().err


def test_checkpoint_of_another_encoder_is_a_config_error(fake_encoders, tmp_path):  # noqa: F811
    ckpt = tmp_path / "other.pt"
    torch.save({"model": {"encoder.frontend.weight": torch.zeros(1)}}, ckpt)
    with pytest.raises(ConfigError, match="weights do not fit the configured encoder"):
        EncoderFeatures(CONFIG, "last", ckpt)


def test_precomputed_encoder_stacks_projects_and_zeroes_padding():
    torch.manual_seed(0)
    enc = PrecomputedEncoder(input_size=4, output_size=6, downsample=2, input_frame_rate=50)
    x = torch.randn(2, 5, 4)
    x[1, 3:] = 0.0  # padding of a 3-frame utterance
    out, lens = enc(x, torch.tensor([5, 3]))
    assert out.shape == (2, 3, 6) and lens.tolist() == [3, 2]
    assert out[1, 2:].abs().sum() == 0
    assert enc.output_size() == 6 and enc.frame_rate() == 25.0
    # the first output frame is the projection of frames 0 and 1 side by side
    torch.testing.assert_close(out[0, 0], enc.proj(torch.cat([x[0, 0], x[0, 1]])))
    plain, plain_lens = PrecomputedEncoder(input_size=4)(x, torch.tensor([5, 3]))
    torch.testing.assert_close(plain[0], x[0])
    assert plain_lens.tolist() == [5, 3] and PrecomputedEncoder(4, downsample=3).output_size() == 12
    with pytest.raises(ValueError, match=r"expects features \[B, T, 4\]"):
        enc(torch.zeros(1, 16000), torch.tensor([16000]))


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm", "whisper"])
def test_dump_of_a_registered_tiny_encoder_equals_its_training_graph(family, data_dir, tmp_path):
    """conf/tuning/train_<family>_tiny.yaml: the dump of layer 1 equals what training computes with
    ``encoder_conf.layer: 1`` (float32 exactly)."""
    from speechllm.nets.encoders import ENCODERS
    from speechllm.tasks.asr import build_model

    if family not in ENCODERS:
        pytest.skip(f"encoder {family!r} is not registered yet")
    config_path = Path(__file__).resolve().parents[1] / f"egs/mini_synth/asr1/conf/tuning/train_{family}_tiny.yaml"
    assert main(["--data_dir", str(data_dir), "--out_dir", str(tmp_path / "out"), "--encoder_config", str(config_path),
                 "--layer", "1", "--dtype", "float32"]) == 0
    config = yaml.safe_load(config_path.read_text())
    config["encoder_conf"]["layer"] = 1
    torch.manual_seed(0)  # the dump builds its random (model_config) weights after the same seed
    encoder = build_encoder(config).eval()
    model = build_model(config, vocab_size=10)
    model.encoder = encoder
    model.eval()
    for utt, rx in read_feats_scp(tmp_path / "out" / "feats.scp").items():
        wave, _ = load_audio(str(data_dir.parent / "wav" / f"{utt}.wav"))
        with torch.no_grad():
            enc, enc_lens = model.encode(torch.from_numpy(wave)[None], torch.tensor([wave.shape[0]]))
        np.testing.assert_array_equal(kaldiio.load_mat(rx), enc[0, : enc_lens[0]].numpy())
