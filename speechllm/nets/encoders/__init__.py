"""Encoder registry: the YAML key ``encoder: NAME`` picks the class, ``encoder_conf`` its kwargs.

Every encoder is built as ``ENCODERS[name](input_size=..., **encoder_conf)`` (``input_size`` is
unused by waveform encoders) and provides:

* ``input_kind`` (class attribute): ``"fbank"`` -> ``forward`` gets features ``[B, T, 80]`` with
  ``lengths`` in frames; ``"waveform"`` -> it gets float32 16 kHz audio ``[B, S]`` with ``lengths``
  in samples (zero padded). The data pipeline picks the dataset from it.
* ``forward(x, lengths) -> (out[B, T', D], out_lengths[B])``; output frames ``>= out_lengths`` are
  zero. Where the model supports it (attention masks; see each class's ``padding_invariant``),
  padding a batch does not change the outputs of valid frames.
* ``output_size() -> D`` and ``frame_rate() -> float``: output frames per second (Conformer on
  10 ms fbank: ``100 / subsampling_rate``; HuBERT/wav2vec 2.0/WavLM/Whisper: 50; halved by
  ``downsample: 2``).
* ``output_lengths(lengths) -> out_lengths[B]``: the lengths ``forward`` returns, without running it
  (every encoder here; speech-text interleaving places speech spans by them).
* ``hidden_states(x, lengths) -> (list of [B, T', D], out_lengths)`` (pretrained and precomputed
  encoders; not the Conformer): every layer's output, index 0 = after the CNN/embedding, last = the
  final output, for feature dumping and k-means.

Pretrained encoders share the options ``model`` | ``model_config``, ``freeze``, ``freeze_steps``,
``freeze_feature_encoder``, ``layer`` (null | int | weighted_sum), ``layer_norm_before_sum`` and
``downsample`` (average pooling); see :mod:`speechllm.nets.encoders.pretrained`. Whisper adds
``pad_to_30s``; the transformers families add ``config_overrides`` and (SSL) ``normalize_waveform``.
"""
from speechllm.nets.encoders.conformer import ConformerEncoder
from speechllm.nets.encoders.hf_ssl import HubertEncoder, Wav2Vec2Encoder, WavLMEncoder
from speechllm.nets.encoders.precomputed import PrecomputedEncoder
from speechllm.nets.encoders.torchaudio_ssl import (
    TorchaudioHubertEncoder,
    TorchaudioWav2Vec2Encoder,
    TorchaudioWavLMEncoder,
)
from speechllm.nets.encoders.whisper import WhisperEncoder

ENCODERS = {
    "conformer": ConformerEncoder,
    "hubert": HubertEncoder,
    "wav2vec2": Wav2Vec2Encoder,
    "wavlm": WavLMEncoder,
    "whisper": WhisperEncoder,
    "torchaudio_hubert": TorchaudioHubertEncoder,
    "torchaudio_wav2vec2": TorchaudioWav2Vec2Encoder,
    "torchaudio_wavlm": TorchaudioWavLMEncoder,
    "precomputed": PrecomputedEncoder,  # features dumped by dump_encoder_features (input: dumped)
}

__all__ = [
    "ENCODERS",
    "ConformerEncoder",
    "HubertEncoder",
    "Wav2Vec2Encoder",
    "WavLMEncoder",
    "WhisperEncoder",
    "TorchaudioHubertEncoder",
    "TorchaudioWav2Vec2Encoder",
    "TorchaudioWavLMEncoder",
    "PrecomputedEncoder",
]
