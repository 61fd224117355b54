"""Self-supervised speech encoders from Hugging Face transformers: HuBERT, wav2vec 2.0, WavLM.

``encoder: hubert`` (``wav2vec2``, ``wavlm``) with ``encoder_conf``::

    model: facebook/hubert-large-ll60k   # hub id or save_pretrained directory ...
    # model_config: {hidden_size: 32, ...}  # ... or a config dict: randomly initialized model
    config_overrides: {layerdrop: 0.0, mask_time_prob: 0.05}   # applied to the loaded config
    normalize_waveform: null   # null = as the checkpoint's feature extractor (do_normalize)
    freeze: false
    freeze_steps: 0
    freeze_feature_encoder: true
    layer: null                # null | int | weighted_sum
    layer_norm_before_sum: false
    downsample: 1

Input: ``[B, S]`` float32 16 kHz waveforms with ``lengths`` in samples. Output lengths come from the
model's CNN length formula. In training mode the model applies its own time masking
(``mask_time_prob``, the SpecAugment of wav2vec 2.0 fine-tuning) unless the backbone is frozen.

Padding: variants with ``feat_extract_norm: layer`` (the "large" checkpoints) get an attention mask
and are padding invariant: padding a batch does not change the valid outputs. The ``group`` variants
(wav2vec2-base, hubert-base, wavlm-base) normalize the first CNN layer over the whole padded
sequence, so padding changes their outputs whatever mask is passed; as in Hugging Face's own
processors they get no attention mask and zero-padded input (``padding_invariant`` is False).
"""
from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from speechllm.nets.encoders.pretrained import (
    SAMPLE_RATE,
    PretrainedEncoder,
    check_loading_info,
    check_source,
    check_waveform,
    load_from_hub_or_dir,
    normalize_waveform,
    valid_mask,
)
from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

HF_NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def build_hf_config(config_cls: type[PretrainedConfig], values: dict[str, Any], option: str) -> PretrainedConfig:
    """``config_cls(**values)``, refusing keys the config does not know (HF would keep them silently)."""
    known = set(config_cls().to_dict())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{option}: unknown key(s) {unknown} for {config_cls.__name__}")
    return config_cls(**values)


def read_do_normalize(source: str, local_files_only: bool) -> bool | None:
    """``do_normalize`` of the checkpoint's feature extractor (preprocessor_config.json), None if absent."""
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    return bool(getattr(fe, "do_normalize", False))


def load_hf_model(model_cls: type[PreTrainedModel], config_cls: type[PretrainedConfig], name: str, family: str,
                  config_overrides: dict[str, Any] | None = None) -> tuple[PreTrainedModel, bool | None]:
    """Load ``model_cls`` weights from a hub id or directory (float32), with the no-network policy.

    Returns the model and the checkpoint's ``do_normalize`` (None when it has no preprocessor config).
    Checkpoints of task heads (``HubertForCTC``, ``Wav2Vec2ForPreTraining``) load too: transformers
    strips their base-model prefix and drops the head.
    """
    overrides = dict(config_overrides or {})

    def load(source: str, local_only: bool) -> tuple[PreTrainedModel, bool | None]:
        # The raw dict: a config class loads another family's config.json with only a warning.
        raw, _ = config_cls.get_config_dict(source, local_files_only=local_only)
        if raw.get("model_type") != config_cls.model_type:
            raise ConfigError(f"encoder_conf.model: '{name}' is a '{raw.get('model_type')}' model, "
                              f"not {config_cls.model_type}; pick the matching encoder")
        config = config_cls.from_pretrained(source, local_files_only=local_only, **overrides)
        model, info = model_cls.from_pretrained(source, config=config, local_files_only=local_only,
                                                dtype=torch.float32, output_loading_info=True)
        n_params = sum(1 for _ in model.named_parameters())
        check_loading_info(info, name, family, n_params)
        return model, read_do_normalize(source, local_only)

    return load_from_hub_or_dir(load, name, family)


class HFSSLEncoder(PretrainedEncoder):
    """A transformers SSL model (HuBERT/wav2vec 2.0/WavLM) as a speech encoder; see the module doc.

    Args:
        input_size: unused (the input is a waveform); accepted because ``build_model`` passes it.
        model: hub id or ``save_pretrained`` directory; exclusive with ``model_config``.
        model_config: kwargs of the family's config class for a randomly initialized model.
        config_overrides: config attributes replaced when loading ``model`` (dropouts, ``layerdrop``,
            ``mask_time_prob``...).
        normalize_waveform: zero-mean unit-variance input per utterance; None = the checkpoint's
            ``do_normalize`` (False for ``model_config``).
        freeze, freeze_steps, freeze_feature_encoder, layer, layer_norm_before_sum, downsample:
            see :mod:`speechllm.nets.encoders.pretrained`.
    """

    config_cls: ClassVar[type[PretrainedConfig]]
    model_cls: ClassVar[type[PreTrainedModel]]

    def __init__(
        self,
        input_size: int | None = None,
        model: str | None = None,
        model_config: dict[str, Any] | None = None,
        config_overrides: dict[str, Any] | None = None,
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
            backbone, do_normalize = load_hf_model(self.model_cls, self.config_cls, str(model), self.family,
                                                   config_overrides)
        else:
            values = {**model_config, **(config_overrides or {})}
            backbone = self.model_cls(build_hf_config(self.config_cls, values, "encoder_conf.model_config"))
            do_normalize = None
        if model is not None and do_normalize is None and normalize_waveform is None:
            logger.warning("%s: '%s' has no feature-extractor config (preprocessor_config.json), so input "
                           "waveforms are not normalized; set encoder_conf.normalize_waveform: true if the model "
                           "was trained on normalized audio (the large HuBERT/wav2vec 2.0/WavLM models)",
                           self.family, model)
        self.normalize_waveform = bool(do_normalize) if normalize_waveform is None else bool(normalize_waveform)
        config = backbone.config
        # The CNN's total stride in samples sets the frame rate (320 -> 50 frames/s).
        stride = 1
        for s in config.conv_stride:
            stride *= int(s)
        if getattr(config, "add_adapter", False):
            stride *= int(config.adapter_stride) ** int(config.num_adapter_layers)
        self._attach_backbone(backbone, backbone.feature_extractor, config.num_hidden_layers, config.hidden_size,
                              SAMPLE_RATE / stride)

    def _freeze_feature_encoder(self, feature_encoder: nn.Module) -> None:
        # transformers' own switch also stops the CNN from asking for gradients of its output.
        feature_encoder._freeze_parameters()

    @property
    def padding_invariant(self) -> bool:
        """True for ``feat_extract_norm: layer`` models (attention mask used); see the module doc."""
        return self.backbone.config.feat_extract_norm == "layer"

    def _backbone_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.backbone._get_feat_extract_output_lengths(lengths).to(torch.long)

    def _backbone_states(self, x: torch.Tensor, lengths: torch.Tensor,
                         all_layers: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        check_waveform(x, lengths, self.family)
        x = x * valid_mask(lengths, x.size(1)).to(x.dtype)  # padding must be zeros
        if self.normalize_waveform:
            x = normalize_waveform(x, lengths, HF_NORMALIZE_EPS)
        attention_mask = valid_mask(lengths, x.size(1)).long() if self.padding_invariant else None
        out_lens = self._backbone_output_lengths(lengths)
        if not all_layers:
            return [self.backbone(x, attention_mask=attention_mask).last_hidden_state], out_lens
        layers = self.backbone.encoder.layers
        inputs: dict[int, torch.Tensor] = {}
        outputs: dict[int, torch.Tensor] = {}
        handles = []
        for i, mod in enumerate(layers):
            handles.append(mod.register_forward_pre_hook(_recorder(inputs, i, is_input=True), with_kwargs=True))
            handles.append(mod.register_forward_hook(_recorder(outputs, i, is_input=False), with_kwargs=True))
        try:
            last = self.backbone(x, attention_mask=attention_mask).last_hidden_state
        finally:
            for h in handles:
                h.remove()
        return _assemble_states(inputs, outputs, len(layers), last), out_lens


def _recorder(store: dict[int, torch.Tensor], index: int, is_input: bool):
    """A forward (pre-)hook that stores a layer's hidden-state input or output under ``index``."""

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        store[index] = args[0] if args else kwargs["hidden_states"]

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        store[index] = output[0] if isinstance(output, (tuple, list)) else output

    return pre_hook if is_input else hook


def _assemble_states(inputs: dict[int, torch.Tensor], outputs: dict[int, torch.Tensor], num_layers: int,
                     last: torch.Tensor) -> list[torch.Tensor]:
    """``num_layers + 1`` hidden states from what the layer hooks saw.

    Hooks instead of ``output_hidden_states``: its layout differs between transformers versions and
    it drops the entries of layers skipped by layer drop, which would shift every later index. A
    skipped layer acts as the identity here, so its output is the previous state. The last state is
    the model's final output (after the final layer norm of the "stable layer norm" variants).
    """
    first_run = min(inputs) if inputs else None
    states: list[torch.Tensor] = [inputs[first_run] if first_run is not None else last]
    for i in range(num_layers):
        states.append(outputs.get(i, states[-1]))
    states[-1] = last
    return states


class HubertEncoder(HFSSLEncoder):
    """HuBERT (Hsu et al. 2021) from transformers, e.g. ``facebook/hubert-large-ll60k``."""

    family = "hubert"
    config_cls = HubertConfig
    model_cls = HubertModel


class Wav2Vec2Encoder(HFSSLEncoder):
    """wav2vec 2.0 (Baevski et al. 2020) from transformers, e.g. ``facebook/wav2vec2-large-lv60``."""

    family = "wav2vec2"
    config_cls = Wav2Vec2Config
    model_cls = Wav2Vec2Model


class WavLMEncoder(HFSSLEncoder):
    """WavLM (Chen et al. 2022) from transformers, e.g. ``microsoft/wavlm-large``."""

    family = "wavlm"
    config_cls = WavLMConfig
    model_cls = WavLMModel
