"""Pretrained speech encoders (HuBERT, wav2vec 2.0, WavLM, Whisper; transformers and torchaudio).

Every model here is tiny and randomly initialized from ``model_config`` (no network): the same code
path as a real checkpoint, which only differs in where the weights come from.
"""
import io
import math
import time

import pytest
import torch
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from speechllm.nets.encoders import ENCODERS, ConformerEncoder
from speechllm.nets.encoders import pretrained as pretrained_mod
from speechllm.nets.encoders import torchaudio_ssl as torchaudio_mod
from speechllm.tasks.asr import build_model
from speechllm.utils.config import ConfigError

# HF SSL: a 2-layer CNN with total stride 320 (50 frames/s, like the real 7-layer CNN), "large"
# style layer norms (padding invariant).
HF_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               conv_dim=[32, 32], conv_stride=[10, 32], conv_kernel=[10, 32], num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True)
TA_TINY = dict(extractor_mode="layer_norm", extractor_conv_layer_config=[[32, 10, 10], [32, 32, 32]],
               encoder_embed_dim=32, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2,
               encoder_num_heads=2, encoder_ff_interm_features=64, encoder_layer_norm_first=True,
               encoder_layer_drop=0.0)
WHISPER_TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80)
TINY = {
    "hubert": HF_TINY,
    "wav2vec2": HF_TINY,
    "wavlm": {**HF_TINY, "num_buckets": 16, "max_bucket_distance": 64},
    "whisper": WHISPER_TINY,
    "torchaudio_hubert": TA_TINY,
    "torchaudio_wav2vec2": TA_TINY,
    "torchaudio_wavlm": {**TA_TINY, "encoder_num_buckets": 16, "encoder_max_distance": 64},
}
PRETRAINED = list(TINY)
HF_FAMILIES = ["hubert", "wav2vec2", "wavlm"]


def build(name: str, seed: int = 0, **opts):
    torch.manual_seed(seed)
    return ENCODERS[name](input_size=80, model_config=TINY[name], **opts)


def waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of random 'audio' [B, max(lengths)] and its lengths."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        x[b, :n] = 0.1 * torch.randn(n, generator=g)
    return x, torch.tensor(lengths)


def expected_frames(name: str, samples: int) -> int:
    if name == "whisper":
        return math.ceil(samples / 320)
    n = samples
    for kernel, stride in [(10, 10), (32, 32)]:  # the tiny CNN of HF_TINY / TA_TINY
        n = (n - kernel) // stride + 1
    return n


def test_registry_lists_every_encoder_with_its_input_kind():
    kinds = {name: cls.input_kind for name, cls in ENCODERS.items()}
    assert kinds["conformer"] == "fbank"
    for name in PRETRAINED:
        assert kinds[name] == "waveform", name


@pytest.mark.parametrize("name", PRETRAINED)
def test_output_shape_lengths_and_frame_rate(name):
    enc = build(name).eval()
    x, lengths = waves([16000, 9000])
    out, out_lens = enc(x, lengths)
    assert out_lens.tolist() == [expected_frames(name, 16000), expected_frames(name, 9000)]
    assert out.shape == (2, int(out_lens.max()), 32)
    assert enc.output_size() == 32 and enc.frame_rate() == 50.0
    assert torch.all(out[1, out_lens[1]:] == 0)


@pytest.mark.parametrize("downsample", [1, 2])
@pytest.mark.parametrize("name", PRETRAINED)
def test_output_lengths_equal_the_lengths_forward_returns(name, downsample):
    enc = build(name, downsample=downsample).eval()
    x, lengths = waves([16000, 9001, 4000, 700])
    with torch.no_grad():
        _, out_lens = enc(x, lengths)
    assert torch.equal(enc.output_lengths(lengths), out_lens)


def test_conformer_reports_frame_rate_of_its_subsampling():
    enc = ConformerEncoder(input_size=20, output_size=32, attention_heads=2, linear_units=64, num_blocks=1,
                           cnn_module_kernel=5, subsampling_rate=4)
    assert enc.frame_rate() == 25.0 and enc.input_kind == "fbank"


@pytest.mark.parametrize("name", PRETRAINED)
def test_padding_does_not_change_valid_outputs(name):
    enc = build(name).eval()
    assert enc.padding_invariant
    batch, lengths = waves([16000, 9000])
    with torch.no_grad():
        out, out_lens = enc(batch, lengths)
        alone, alone_lens = enc(batch[1:, :9000], lengths[1:])
    n = int(alone_lens[0])
    assert int(out_lens[1]) == n
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,conf", [
    ("hubert", {**HF_TINY, "feat_extract_norm": "group", "do_stable_layer_norm": False}),
    ("torchaudio_wav2vec2", {**TA_TINY, "extractor_mode": "group_norm", "encoder_layer_norm_first": False}),
])
def test_group_norm_variants_are_flagged_not_padding_invariant(name, conf):
    torch.manual_seed(0)
    enc = ENCODERS[name](model_config=conf).eval()
    assert not enc.padding_invariant
    out, out_lens = enc(*waves([16000, 9000]))  # still runs, with correct lengths
    assert out_lens.tolist() == [50, 28]


@pytest.mark.parametrize("name", PRETRAINED)
def test_hidden_states_hold_every_layer_and_layer_option_selects_one(name):
    enc = build(name).eval()
    x, lengths = waves([16000, 9000])
    with torch.no_grad():
        states, lens = enc.hidden_states(x, lengths)
        last, _ = enc(x, lengths)
        enc.layer = 1
        first_layer, _ = enc(x, lengths)
    assert len(states) == 3 and all(s.shape == last.shape for s in states)
    assert lens.tolist() == [expected_frames(name, 16000), expected_frames(name, 9000)]
    torch.testing.assert_close(states[-1], last)
    torch.testing.assert_close(states[1], first_layer)
    assert not torch.allclose(states[0], states[-1])


@pytest.mark.parametrize("name", ["hubert", "whisper", "torchaudio_wavlm"])
def test_weighted_sum_weights_get_gradients_and_frozen_backbone_does_not(name):
    enc = build(name, freeze=True, layer="weighted_sum", layer_norm_before_sum=True).train()
    assert torch.all(enc.layer_weights == enc.layer_weights[0])  # equal weights at the start
    out, _ = enc(*waves([16000, 9000]))
    (out ** 2).sum().backward()
    assert enc.layer_weights.grad is not None and enc.layer_weights.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in enc.backbone.parameters())
    assert enc.backbone.training  # the frozen backbone ran in eval mode, then got its mode back


@pytest.mark.parametrize("name,cnn", [("hubert", "feature_extractor"), ("torchaudio_hubert", "feature_extractor"),
                                      ("whisper", "conv1")])
def test_freeze_feature_encoder_freezes_only_the_cnn(name, cnn):
    enc = build(name, freeze_feature_encoder=True).train()
    out, _ = enc(*waves([16000, 9000]))
    out.sum().backward()
    cnn_params = list(getattr(enc.backbone, cnn).parameters())
    assert cnn_params and all(p.grad is None and not p.requires_grad for p in cnn_params)
    cnn_ids = {id(p) for p in cnn_params}
    others = [p for p in enc.backbone.parameters() if id(p) not in cnn_ids and p.requires_grad]
    assert any(p.grad is not None for p in others)


def _backbone_has_grads(enc) -> bool:
    return any(p.grad is not None for p in enc.backbone.parameters())


def test_freeze_steps_unfreeze_after_n_steps_and_the_count_survives_state_dict():
    enc = build("hubert", freeze_steps=2, layer="weighted_sum").train()
    x, lengths = waves([16000, 9000])
    for step in (1, 2):
        enc.zero_grad(set_to_none=True)
        enc(x, lengths)[0].sum().backward()
        assert not _backbone_has_grads(enc), f"step {step} should be frozen"
        assert enc.layer_weights.grad is not None
    assert all(p.requires_grad for p in enc.backbone.parameters())  # already in the optimizer
    with torch.no_grad():  # validation passes do not count
        enc(x, lengths)
    assert int(enc.train_steps) == 2 and not enc.frozen_now()
    enc.zero_grad(set_to_none=True)
    enc(x, lengths)[0].sum().backward()
    assert _backbone_has_grads(enc)

    buffer = io.BytesIO()  # a checkpoint round trip; the count is a buffer in the state dict
    torch.save(enc.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("hubert", seed=1, freeze_steps=5, layer="weighted_sum")
    resumed.load_state_dict(torch.load(buffer))
    assert int(resumed.train_steps) == 3 and resumed.frozen_now()  # 2 more frozen steps to go


def test_downsample_averages_pairs_of_frames():
    full = build("wavlm").eval()
    half = build("wavlm", downsample=2).eval()
    x, lengths = waves([16000, 9000])
    with torch.no_grad():
        a, a_lens = full(x, lengths)
        b, b_lens = half(x, lengths)
        states, _ = half.hidden_states(x, lengths)
    assert half.frame_rate() == 25.0
    assert b_lens.tolist() == [25, 14] and a_lens.tolist() == [50, 28] and b.shape == (2, 25, 32)
    torch.testing.assert_close(b[0, 3], (a[0, 6] + a[0, 7]) / 2)
    assert states[-1].shape == b.shape and torch.all(b[1, 14:] == 0)
    odd, odd_lens = half(x[1:, :8700], torch.tensor([8700]))  # 27 frames: the last window holds one
    ref, _ = full(x[1:, :8700], torch.tensor([8700]))
    assert odd_lens.tolist() == [14]
    torch.testing.assert_close(odd[0, 13], ref[0, 26])


@pytest.mark.parametrize("name", HF_FAMILIES)
def test_save_pretrained_directory_loads_identical_weights(tmp_path, name):
    enc = build(name, normalize_waveform=True).eval()
    enc.backbone.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path)  # preprocessor_config.json
    loaded = ENCODERS[name](model=str(tmp_path)).eval()
    assert loaded.normalize_waveform  # taken from the checkpoint's feature extractor
    x, lengths = waves([16000, 9000])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths)[0], enc(x, lengths)[0])
        # torchaudio reads the same directory (import_huggingface_model) and computes the same
        ta = ENCODERS[f"torchaudio_{name}"](model=str(tmp_path)).eval()
        torch.testing.assert_close(ta(x, lengths)[0], enc(x, lengths)[0], atol=1e-5, rtol=1e-4)


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    build("hubert").backbone.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="is a 'hubert' model"):
        ENCODERS["wav2vec2"](model=str(tmp_path))


@pytest.mark.parametrize("name,model_id", [("hubert", "facebook/hubert-large-ll60k"),
                                           ("wavlm", "microsoft/wavlm-large"),
                                           ("torchaudio_wav2vec2", "facebook/wav2vec2-large-lv60")])
def test_offline_hub_id_is_a_config_error_that_explains_local_copies(monkeypatch, name, model_id):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        ENCODERS[name](model=model_id)
    msg = str(e.value)
    assert model_id in msg and "local" in msg and "save_pretrained" in msg and "HF_HUB_OFFLINE" in msg


def test_unreachable_hub_fails_fast_with_a_config_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained_mod, "hub_reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="unreachable"):
        ENCODERS["hubert"](model="facebook/hubert-large-ll60k")
    assert time.monotonic() - start < 10


def test_torchaudio_bundle_without_network_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weight cache
    monkeypatch.setattr(torchaudio_mod, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="HUBERT_LARGE.*local"):
        ENCODERS["torchaudio_hubert"](model="HUBERT_LARGE")


@pytest.mark.parametrize("opts,match", [
    ({"model": "x/y", "model_config": HF_TINY}, "exactly one of"),
    ({}, "exactly one of"),
    ({"model_config": {**HF_TINY, "hiden_size": 8}}, "unknown key"),
    ({"model_config": HF_TINY, "layer": 3}, "out of range"),
    ({"model_config": HF_TINY, "layer": "best"}, "weighted_sum"),
    ({"model_config": HF_TINY, "freeze": True, "freeze_steps": 10}, "freeze_steps"),
    ({"model_config": HF_TINY, "downsample": 0}, "downsample"),
    ({"model": "/no/such/dir"}, "not found"),
])
def test_bad_options_are_config_errors(opts, match):
    with pytest.raises(ConfigError, match=match):
        ENCODERS["hubert"](**opts)


def test_fbank_input_to_a_waveform_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="waveform"):
        build("hubert")(torch.randn(2, 100, 80), torch.tensor([100, 90]))


def test_build_model_with_hubert_trains_on_waveforms():
    config = {
        "encoder": "hubert",
        "encoder_conf": {"model_config": HF_TINY, "freeze_feature_encoder": True, "layer": "weighted_sum",
                         "downsample": 2},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1},
        "model_conf": {"ctc_weight": 0.5},
    }
    torch.manual_seed(0)
    model = build_model(config, vocab_size=12)
    assert isinstance(model.encoder, ENCODERS["hubert"]) and model.encoder.input_kind == "waveform"
    feats, feats_lens = waves([16000, 9000])
    batch = {"utt_ids": ["a", "b"], "feats": feats, "feats_lens": feats_lens,
             "ys": torch.tensor([[2, 3, 4], [5, 6, -1]]), "ys_lens": torch.tensor([3, 2])}
    loss, stats = model(batch)
    loss.backward()
    assert math.isfinite(stats["loss"]) and model.encoder.layer_weights.grad is not None
    assert isinstance(model.encoder.backbone, HubertModel)
