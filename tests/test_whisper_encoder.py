"""Whisper encoder: log-mel frontend equal to WhisperFeatureExtractor, no 30 s padding by default,
exact original behaviour with pad_to_30s, encoder-only loading from a full checkpoint."""
import math

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from speechllm.nets.encoders import ENCODERS, WhisperEncoder
from speechllm.nets.encoders.whisper import WhisperLogMel

TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80)


def tiny_encoder(**opts) -> WhisperEncoder:
    torch.manual_seed(0)
    return ENCODERS["whisper"](model_config=TINY, **opts).eval()


def speech_like(samples: int, seed: int = 0) -> np.ndarray:
    """Two tones with a rising envelope plus noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    wave = np.linspace(0.1, 0.5, samples) * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1330 * t))
    return (wave + 0.01 * rng.standard_normal(samples)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(n_mels):
    audio = speech_like(20850)  # not a multiple of the hop
    ref = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="pt").input_features
    frontend = WhisperLogMel(n_mels)
    x, lengths = torch.from_numpy(audio)[None], torch.tensor([len(audio)])
    padded, _ = frontend(x, lengths, pad_to_30s=True)
    assert padded.shape == ref.shape == (1, n_mels, 3000)
    torch.testing.assert_close(padded, ref, atol=1e-4, rtol=0)
    short, frames = frontend(x, lengths)  # the default: only the frames of the audio
    assert frames.tolist() == [math.ceil(20850 / 160)] and short.shape == (1, n_mels, 131)
    torch.testing.assert_close(short, ref[..., :131], atol=1e-4, rtol=0)


def test_short_audio_runs_without_30s_padding():
    enc = tiny_encoder()
    lengths = [8007, 3200]
    x = torch.zeros(2, 8007)
    for b, n in enumerate(lengths):
        x[b, :n] = torch.from_numpy(speech_like(n, seed=b))
    out, out_lens = enc(x, torch.tensor(lengths))
    assert out_lens.tolist() == [math.ceil(8007 / 320), 10] and out.shape == (2, 26, 32)
    assert enc.frame_rate() == 50.0 and not enc.pad_to_30s


def test_pad_to_30s_reproduces_the_original_encoder():
    enc = tiny_encoder(pad_to_30s=True)
    audio = speech_like(12345)
    feats = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = enc.backbone(feats).last_hidden_state  # HF's own forward on the 3000 frames
        out, out_lens = enc(torch.from_numpy(audio)[None], torch.tensor([12345]))
    n = math.ceil(12345 / 320)
    assert out_lens.tolist() == [n] and out.shape == (1, n, 32)
    torch.testing.assert_close(out[0], ref[0, :n], atol=1e-4, rtol=1e-4)
    # every utterance gets its own 30 s window, so batching does not change it either
    batch = torch.zeros(2, 20000)
    batch[0] = torch.from_numpy(speech_like(20000, seed=1))
    batch[1, :12345] = torch.from_numpy(audio)
    with torch.no_grad():
        both, _ = enc(batch, torch.tensor([20000, 12345]))
    torch.testing.assert_close(both[1, :n], out[0], atol=1e-5, rtol=1e-4)


def test_longer_than_30s_is_an_error():
    with pytest.raises(ValueError, match="at most 30 s"):
        tiny_encoder()(torch.zeros(1, 480001), torch.tensor([480001]))


def test_n_mels_comes_from_the_model_config():
    torch.manual_seed(0)
    enc = ENCODERS["whisper"](model_config={**TINY, "num_mel_bins": 128}).eval()
    assert enc.frontend.n_mels == 128
    out, _ = enc(torch.from_numpy(speech_like(4000))[None], torch.tensor([4000]))
    assert out.shape == (1, 13, 32)


def test_loads_only_the_encoder_of_a_full_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = WhisperConfig(**TINY, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
                           max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1)
    full = WhisperForConditionalGeneration(config)
    full.save_pretrained(tmp_path)
    enc = ENCODERS["whisper"](model=str(tmp_path)).eval()
    assert isinstance(enc.backbone, HFWhisperEncoder)
    assert not any("decoder" in k or "proj_out" in k for k in enc.state_dict())
    reference = full.model.encoder.state_dict()
    for key, value in enc.backbone.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    # an encoder saved on its own loads the same way
    full.model.encoder.save_pretrained(tmp_path / "encoder_only")
    again = ENCODERS["whisper"](model=str(tmp_path / "encoder_only")).eval()
    x, lengths = torch.from_numpy(speech_like(6000))[None], torch.tensor([6000])
    with torch.no_grad():
        torch.testing.assert_close(again(x, lengths)[0], enc(x, lengths)[0], rtol=0, atol=0)
