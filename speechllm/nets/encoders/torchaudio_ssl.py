"""Self-supervised speech encoders built with torchaudio: ``torchaudio.models.wav2vec2_model`` / ``wavlm_model``.

``encoder: torchaudio_hubert`` (``torchaudio_wav2vec2``, ``torchaudio_wavlm``) with ``encoder_conf``::

    model: HUBERT_LARGE           # a torchaudio.pipelines bundle name, or a Hugging Face hub id /
                                  # save_pretrained directory (converted with import_huggingface_model)
    # model_config: {encoder_num_layers: 2, ...}   # builder kwargs; missing ones = the base architecture
    normalize_waveform: null      # null = as the bundle / checkpoint was trained
    freeze / freeze_steps / freeze_feature_encoder / layer / layer_norm_before_sum / downsample
                                  # as every pretrained encoder (speechllm.nets.encoders.pretrained)

HuBERT and wav2vec 2.0 share one architecture in torchaudio (``wav2vec2_model``); the family only
sets the default architecture of ``model_config`` and which checkpoints fit. Input: ``[B, S]``
float32 16 kHz waveforms. torchaudio passes a key-padding mask to every layer, so
``extractor_mode: layer_norm`` models are padding invariant; ``group_norm`` ones normalize the first
CNN layer over the padded sequence and are not (``padding_invariant`` is False).

Bundle weights download from download.pytorch.org into ``$TORCH_HOME/hub/checkpoints``; offline,
only a file already there is used.
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torchaudio import pipelines
from torchaudio.models import Wav2Vec2Model, wav2vec2_model, wavlm_model
from torchaudio.models.wav2vec2.utils import import_huggingface_model
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model as HFWav2Vec2Model
from transformers import WavLMConfig, WavLMModel

from speechllm.nets.encoders.hf_ssl import load_hf_model
from speechllm.nets.encoders.pretrained import (
    SAMPLE_RATE,
    PretrainedEncoder,
    check_source,
    check_waveform,
    hub_reachable,
    normalize_waveform,
    valid_mask,
)
from speechllm.utils.config import ConfigError

TORCHAUDIO_NORMALIZE_EPS = 1e-5  # the bundles normalize with F.layer_norm's default eps
DOWNLOAD_URL = "https://download.pytorch.org"

# The "base" architectures (12 layers, 768 dims) as defaults for model_config.
_BASE_ARCH: dict[str, Any] = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": None,  # None = the standard 7-layer CNN, 320x downsampling
    "extractor_conv_bias": False,
    "encoder_embed_dim": 768,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_num_layers": 12,
    "encoder_num_heads": 12,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 3072,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
    "aux_num_out": None,
}


def _bundle(name: str) -> pipelines.Wav2Vec2Bundle | None:
    bundle = getattr(pipelines, name, None) if name.isupper() else None
    return bundle if isinstance(bundle, pipelines.Wav2Vec2Bundle) else None


def _unwrap(model: nn.Module) -> tuple[Wav2Vec2Model, bool]:
    """The bare :class:`Wav2Vec2Model` of a bundle's model and whether the bundle normalizes its input."""
    if isinstance(model, Wav2Vec2Model):
        return model, False
    inner = getattr(model, "model", None)  # torchaudio's wrapper adds input normalization / log-softmax
    if not isinstance(inner, Wav2Vec2Model):
        raise ConfigError(f"unexpected torchaudio bundle model type {type(model).__name__}")
    return inner, bool(getattr(model, "normalize_waveform", False))


def load_bundle(name: str, bundle: pipelines.Wav2Vec2Bundle) -> tuple[Wav2Vec2Model, bool]:
    """Build a torchaudio bundle's model, downloading its weights only when the host is reachable."""
    path = getattr(bundle, "_path", "")  # the weight file name (torchaudio keeps it private)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(path))
    if not (path and os.path.isfile(cached)) and not hub_reachable(DOWNLOAD_URL):
        raise ConfigError(
            f"encoder_conf.model: cannot load torchaudio bundle '{name}': its weights are not in the local torch hub "
            f"cache ({cached}) and {DOWNLOAD_URL} is unreachable (no network). Use a local copy: put the weight "
            f"file there (set TORCH_HOME to choose the cache), or set encoder_conf.model to a local directory "
            f"written by save_pretrained of the same model from the Hugging Face hub "
            f"(e.g. facebook/hubert-large-ll60k)."
        )
    model, normalize = _unwrap(bundle.get_model())
    model.aux = None  # fine-tuned (ASR) bundles carry a CTC head; the encoder does not use it
    return model, normalize


class TorchaudioSSLEncoder(PretrainedEncoder):
    """A torchaudio ``Wav2Vec2Model`` (wav2vec 2.0 / HuBERT / WavLM architecture) as a speech encoder.

    Args:
        input_size: unused (the input is a waveform); accepted because ``build_model`` passes it.
        model: a ``torchaudio.pipelines`` bundle name (``HUBERT_LARGE``, ``WAV2VEC2_LARGE_LV60K``,
            ``WAVLM_LARGE``...) or a Hugging Face hub id / ``save_pretrained`` directory of the same
            family; exclusive with ``model_config``.
        model_config: keyword arguments of ``wav2vec2_model`` (``wavlm_model`` for WavLM); missing
            keys take the base architecture's values.
        normalize_waveform: zero-mean unit-variance input per utterance; None = as the bundle does
            (HF checkpoints: ``do_normalize``; ``model_config``: False).
        freeze, freeze_steps, freeze_feature_encoder, layer, layer_norm_before_sum, downsample:
            see :mod:`speechllm.nets.encoders.pretrained`.
    """

    builder: ClassVar[Callable[..., Wav2Vec2Model]]
    default_arch: ClassVar[dict[str, Any]]
    hf_classes: ClassVar[tuple[type, type]]  # (config class, model class) of the same family

    def __init__(
        self,
        input_size: int | None = None,
        model: str | None = None,
        model_config: dict[str, Any] | None = None,
        normalize_waveform: bool | None = None,
        freeze: bool = False,
        freeze_steps: int = 0,
        freeze_feature_encoder: bool = False,
        layer: int | str | None = None,
        layer_norm_before_sum: bool = False,
        downsample: int = 1,
    ) -> None:
        super().__init__(freeze=freeze, freeze_steps=freeze_steps, freeze_feature_encoder=freeze_feature_encoder,
                         layer=layer, layer_norm_before_sum=layer_norm_before_sum, downsample=downsample)
        check_source(model, model_config, self.family)
        if model is not None:
            backbone, trained_normalized = self._load(str(model))
        else:
            backbone, trained_normalized = self._build(model_config), False
        self.normalize_waveform = trained_normalized if normalize_waveform is None else bool(normalize_waveform)
        stride = 1
        for block in backbone.feature_extractor.conv_layers:
            stride *= int(block.conv.stride[0])
        transformer = backbone.encoder.transformer
        self._attach_backbone(backbone, backbone.feature_extractor, len(transformer.layers),
                              transformer.pos_conv_embed.embed_dim, SAMPLE_RATE / stride)

    def _build(self, model_config: dict[str, Any]) -> Wav2Vec2Model:
        kwargs = {**self.default_arch, **model_config}
        allowed = set(inspect.signature(self.builder).parameters)
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ConfigError(f"encoder_conf.model_config: unknown key(s) {unknown} for "
                              f"torchaudio {self.builder.__name__}; allowed: {sorted(allowed)}")
        if kwargs["extractor_conv_layer_config"] is not None:  # YAML gives lists; torchaudio wants tuples
            kwargs["extractor_conv_layer_config"] = [tuple(int(v) for v in layer)
                                                     for layer in kwargs["extractor_conv_layer_config"]]
        return self.builder(**kwargs)

    def _load(self, name: str) -> tuple[Wav2Vec2Model, bool]:
        bundle = _bundle(name)
        if bundle is not None:
            is_wavlm = getattr(bundle, "_model_type", "") == "WavLM"
            if is_wavlm != (self.builder is wavlm_model):
                raise ConfigError(f"encoder_conf.model: bundle {name} does not have the {self.family} architecture")
            return load_bundle(name, bundle)
        config_cls, model_cls = self.hf_classes
        hf_model, do_normalize = load_hf_model(model_cls, config_cls, name, self.family)
        # import_huggingface_model warns that a bare model has no CTC head: expected here.
        log = logging.getLogger(import_huggingface_model.__module__)
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            return import_huggingface_model(hf_model), bool(do_normalize)
        finally:
            log.setLevel(level)

    @property
    def padding_invariant(self) -> bool:
        """False for ``extractor_mode: group_norm`` (GroupNorm over the padded time axis)."""
        return not any(isinstance(b.layer_norm, nn.GroupNorm) for b in self.backbone.feature_extractor.conv_layers)

    def _backbone_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for block in self.backbone.feature_extractor.conv_layers:  # as ConvLayerBlock.forward
            lengths = (torch.div(lengths - block.kernel_size, block.stride, rounding_mode="floor") + 1).clamp(min=0)
        return lengths

    def _backbone_states(self, x: torch.Tensor, lengths: torch.Tensor,
                         all_layers: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        check_waveform(x, lengths, self.family)
        x = x * valid_mask(lengths, x.size(1)).to(x.dtype)
        if self.normalize_waveform:
            x = normalize_waveform(x, lengths, TORCHAUDIO_NORMALIZE_EPS)
        feats, out_lens = self.backbone.feature_extractor(x, lengths)
        # The steps of Wav2Vec2Model.forward, spelled out to keep every layer's output: projection,
        # zeroed padding + key-padding mask, positional conv (+ layer norm), the layers, final norm.
        h, mask = self.backbone.encoder._preprocess(feats, out_lens)
        transformer = self.backbone.encoder.transformer
        h = transformer._preprocess(h)
        key_padding_mask = None
        if self.builder is wavlm_model:  # torchaudio's WavLM attention takes a key-padding mask instead
            pad = ~valid_mask(out_lens, h.size(1))
            # additive float mask, the type of its relative position bias (a bool one warns)
            key_padding_mask, mask = torch.zeros_like(pad, dtype=h.dtype).masked_fill(pad, float("-inf")), None
        states = [h]
        position_bias = None  # WavLM's relative position bias, computed by the first layer
        for layer in transformer.layers:
            if not (transformer.training and torch.rand(1).item() <= transformer.layer_drop):  # as torchaudio
                h, position_bias = layer(h, mask, position_bias=position_bias, key_padding_mask=key_padding_mask)
            states.append(h)
        if not transformer.layer_norm_first:
            states[-1] = transformer.layer_norm(h)
        return (states if all_layers else states[-1:]), out_lens.to(torch.long)


class TorchaudioHubertEncoder(TorchaudioSSLEncoder):
    """HuBERT via torchaudio (``HUBERT_BASE``, ``HUBERT_LARGE``, ``HUBERT_XLARGE`` bundles)."""

    family = "torchaudio_hubert"
    builder = staticmethod(wav2vec2_model)
    default_arch = _BASE_ARCH
    hf_classes = (HubertConfig, HubertModel)


class TorchaudioWav2Vec2Encoder(TorchaudioSSLEncoder):
    """wav2vec 2.0 via torchaudio (``WAV2VEC2_BASE``, ``WAV2VEC2_LARGE_LV60K``, ``WAV2VEC2_XLSR_300M``...)."""

    family = "torchaudio_wav2vec2"
    builder = staticmethod(wav2vec2_model)
    default_arch = {**_BASE_ARCH, "encoder_ff_interm_dropout": 0.1, "encoder_layer_drop": 0.1}
    hf_classes = (Wav2Vec2Config, HFWav2Vec2Model)


class TorchaudioWavLMEncoder(TorchaudioSSLEncoder):
    """WavLM via torchaudio (``WAVLM_BASE``, ``WAVLM_BASE_PLUS``, ``WAVLM_LARGE`` bundles)."""

    family = "torchaudio_wavlm"
    builder = staticmethod(wavlm_model)
    default_arch = {**_BASE_ARCH, "encoder_num_buckets": 320, "encoder_max_distance": 800}
    hf_classes = (WavLMConfig, WavLMModel)
