"""build_model: plain-dict registries pick classes from YAML configs; bad keys give clear errors."""
import json

import pytest
import torch
import yaml

from asr_toys import VOCAB, tiny_config
from speechllm.features.cmvn import GlobalCMVN
from speechllm.features.specaug import SpecAugment
from speechllm.models.ctc_attention import CTCAttentionModel
from speechllm.nets.decoders import TransformerDecoder
from speechllm.nets.encoders import ConformerEncoder
from speechllm.tasks.asr import build_model
from speechllm.utils.config import ConfigError

YAML = """
input_size: 20
encoder: conformer
encoder_conf: {output_size: 32, attention_heads: 2, linear_units: 64, num_blocks: 1, cnn_module_kernel: 5,
               subsampling_rate: 6}
decoder: transformer
decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1}
model_conf: {ctc_weight: 0.5, lsm_weight: 0.2}
specaug: true
specaug_conf: {num_freq_masks: 1, max_freq_width: 4, num_time_masks: 1, max_time_width: 5}
batch_bins: 1000   # a Trainer key: ignored by build_model
"""


def test_registry_picks_classes_from_yaml():
    model = build_model(yaml.safe_load(YAML), VOCAB)
    assert isinstance(model, CTCAttentionModel)
    assert isinstance(model.encoder, ConformerEncoder)
    assert isinstance(model.decoder, TransformerDecoder)
    assert isinstance(model.specaug, SpecAugment)
    assert model.normalize is None
    assert model.ctc_weight == 0.5 and model.criterion_att.smoothing == 0.2
    assert model.encoder.subsampling.rate == 6
    assert model.decoder.vocab_size == VOCAB and model.sos == model.eos == VOCAB - 1


def test_pure_ctc_config_builds_no_decoder():
    model = build_model(tiny_config(ctc_weight=1.0), VOCAB)
    assert model.decoder is None and model.ctc is not None


def test_global_mvn_reads_stats_file(tmp_path):
    stats = tmp_path / "cmvn.json"
    stats.write_text(json.dumps({"count": 4, "sum": [4.0] * 20, "sum_sq": [8.0] * 20}))
    cfg = tiny_config(normalize="global_mvn", normalize_conf={"stats_file": str(stats)})
    model = build_model(cfg, VOCAB)
    assert isinstance(model.normalize, GlobalCMVN)
    torch.testing.assert_close(model.normalize.mean, torch.ones(20))
    assert not model.normalize.utterance_mean
    cfg["normalize_conf"]["utterance_mean"] = True
    assert build_model(cfg, VOCAB).normalize.utterance_mean


def test_cmvn_stats_path_argument_overrides_config(tmp_path):
    stats = tmp_path / "packed_cmvn.json"
    stats.write_text(json.dumps({"count": 2, "sum": [6.0] * 20, "sum_sq": [20.0] * 20}))
    cfg = tiny_config(normalize="global_mvn", normalize_conf={"stats_file": "/nonexistent/cmvn.json"})
    model = build_model(cfg, VOCAB, cmvn_stats_path=stats)
    torch.testing.assert_close(model.normalize.mean, torch.full((20,), 3.0))


@pytest.mark.parametrize("key,value,choice", [
    ("encoder", "whisperx", "conformer"),
    ("decoder", "rnn", "transformer"),
    ("normalize", "utterance_mvn", "global_mvn"),
])
def test_unknown_name_lists_the_choices(key, value, choice):
    with pytest.raises(ConfigError, match=f"{key}: unknown choice '{value}'.*{choice}"):
        build_model(tiny_config(**{key: value}), VOCAB)


def test_unknown_option_lists_allowed_options():
    cfg = tiny_config()
    cfg["encoder_conf"]["num_layers"] = 3
    with pytest.raises(ConfigError, match=r"encoder_conf: unknown option\(s\) \['num_layers'\].*num_blocks"):
        build_model(cfg, VOCAB)


def test_unknown_model_conf_option_is_an_error():
    cfg = tiny_config()
    cfg["model_conf"]["ctc_wieght"] = 0.3
    with pytest.raises(ConfigError, match="model_conf.*ctc_wieght"):
        build_model(cfg, VOCAB)


def test_global_mvn_without_stats_file_is_an_error():
    with pytest.raises(ConfigError, match="stats_file"):
        build_model(tiny_config(normalize="global_mvn"), VOCAB)
