"""The Whisper encoder (Radford et al. 2022) from transformers, with Whisper's log-mel frontend in torch.

``encoder: whisper`` with ``encoder_conf``::

    model: openai/whisper-large-v3      # hub id or save_pretrained directory (of a full Whisper model
                                        # or of its encoder); only the encoder's weights are loaded
    # model_config: {d_model: 32, encoder_layers: 2, ...}   # WhisperConfig kwargs: random init
    config_overrides: {dropout: 0.1}    # applied to the loaded config
    pad_to_30s: false
    freeze / freeze_steps / freeze_feature_encoder / layer / layer_norm_before_sum / downsample
                                        # as every pretrained encoder (speechllm.nets.encoders.pretrained)

Input: ``[B, S]`` float32 16 kHz waveforms; the log-mel features (``n_mels`` = the model config's
``num_mel_bins``, 80 or 128) are computed inside, on the model's device. Output: 50 frames/s
(``ceil(S / 320)`` frames), at most 1500 (30 s); longer inputs raise a ValueError.

``pad_to_30s: false`` (default): the encoder runs on the actual length. Positional embeddings are
sliced to that length and a key-padding mask keeps padded frames out of attention, so an utterance
gives the same output alone or in a padded batch. Whisper was trained on 30 s windows only, so this
is an approximation that fine-tuning adapts to (as in most speech-LLM work).
``pad_to_30s: true``: every utterance is zero-padded to 30 s and encoded without a mask, exactly as
the original model; the outputs are then cut to ``ceil(S / 320)`` valid frames.

Only ``WhisperEncoder`` is built; a full Whisper checkpoint's decoder weights are never kept.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperConfig
from transformers.audio_utils import mel_filter_bank
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

from speechllm.nets.encoders.hf_ssl import build_hf_config
from speechllm.nets.encoders.pretrained import (
    SAMPLE_RATE,
    PretrainedEncoder,
    check_loading_info,
    check_source,
    check_waveform,
    load_from_hub_or_dir,
    valid_mask,
)
from speechllm.utils.config import ConfigError

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
# Checkpoints store the encoder under "model.encoder." (WhisperForConditionalGeneration) or
# "encoder." (WhisperModel); an encoder saved on its own has no prefix.
ENCODER_KEY_MAPPING = {r"^model\.encoder\.": "", r"^encoder\.": ""}


class WhisperLogMel(nn.Module):
    """Whisper's log-mel spectrogram, as ``WhisperFeatureExtractor`` computes it, batched in torch.

    Power spectrum of a 400-point Hann-windowed STFT every 160 samples -> Slaney-style mel filters
    (0-8 kHz) -> ``log10(max(mel, 1e-10))`` -> floor at (utterance max - 8) -> ``(x + 4) / 4``.
    Frame ``t`` is centered on sample ``160 t``; an utterance of S samples has ``ceil(S / 160)``
    frames. The signal is reflected at its start (like ``torch.stft(center=True)``) and followed by
    zeros at its end, as Whisper saw it in training (audio followed by zero padding); the max of
    the floor is taken over the utterance's own frames. So padding never changes valid frames.
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        filters = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
                                  max_frequency=8000.0, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
        # Derived from n_mels: not saved in checkpoints, rebuilt on construction, moved with .to().
        self.register_buffer("mel_filters", torch.from_numpy(filters.T.copy()).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @property
    def chunk_samples(self) -> int:
        return CHUNK_SECONDS * self.sample_rate

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                pad_to_30s: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[B, S]`` waveforms -> ``(log-mel [B, n_mels, T], frame lengths [B])``.

        ``pad_to_30s``: pad every utterance to 30 s and return all 3000 frames, exactly what
        ``WhisperFeatureExtractor`` returns (floor from the max over the whole window).
        """
        if pad_to_30s and x.size(1) > self.chunk_samples:
            raise ValueError(f"pad_to_30s: input of {x.size(1)} samples is longer than {CHUNK_SECONDS} s")
        with torch.autocast(device_type=x.device.type, enabled=False):  # STFT and log in float32
            x = x.float() * valid_mask(lengths, x.size(1)).float()
            frame_lens = (lengths + HOP_LENGTH - 1) // HOP_LENGTH
            if pad_to_30s:
                x = F.pad(x, (0, self.chunk_samples - x.size(1)))
                spec = torch.stft(x, N_FFT, HOP_LENGTH, window=self.window, center=True, pad_mode="reflect",
                                  return_complex=True)[..., :-1]
            else:
                half = N_FFT // 2
                if x.size(1) <= half:  # reflection needs half + 1 samples
                    x = F.pad(x, (0, half + 1 - x.size(1)))
                start = x[:, 1:half + 1].flip(-1)
                x = torch.cat([start, x, x.new_zeros(x.size(0), half)], dim=1)
                spec = torch.stft(x, N_FFT, HOP_LENGTH, window=self.window, center=False, return_complex=True)
                spec = spec[..., :int(frame_lens.max())]
            mel = self.mel_filters @ (spec.abs() ** 2)
            log_spec = torch.clamp(mel, min=1e-10).log10()
            if pad_to_30s:
                peak = log_spec.amax(dim=(1, 2), keepdim=True)
            else:
                own = valid_mask(frame_lens, log_spec.size(-1)).unsqueeze(1)
                peak = log_spec.masked_fill(~own, float("-inf")).amax(dim=(1, 2), keepdim=True)
            log_spec = torch.maximum(log_spec, peak - 8.0)
            return (log_spec + 4.0) / 4.0, frame_lens


def load_whisper_encoder(name: str, config_overrides: dict[str, Any] | None = None) -> HFWhisperEncoder:
    """Only the encoder of a Whisper checkpoint (float32), with the no-network policy."""

    def load(source: str, local_only: bool) -> HFWhisperEncoder:
        raw, _ = WhisperConfig.get_config_dict(source, local_files_only=local_only)
        if raw.get("model_type") != "whisper":
            raise ConfigError(f"encoder_conf.model: '{name}' is a '{raw.get('model_type')}' model, not whisper")
        config = WhisperConfig.from_pretrained(source, local_files_only=local_only, **(config_overrides or {}))
        encoder, info = HFWhisperEncoder.from_pretrained(source, config=config, local_files_only=local_only,
                                                         key_mapping=ENCODER_KEY_MAPPING, dtype=torch.float32,
                                                         output_loading_info=True)
        check_loading_info(info, name, "whisper", sum(1 for _ in encoder.named_parameters()))
        return encoder

    return load_from_hub_or_dir(load, name, "whisper")


class WhisperEncoder(PretrainedEncoder):
    """Whisper's audio encoder on raw waveforms; see the module doc.

    Args:
        input_size: unused (the input is a waveform; mel bins come from the model config).
        model: hub id or ``save_pretrained`` directory; exclusive with ``model_config``.
        model_config: ``WhisperConfig`` kwargs (``d_model``, ``encoder_layers``, ``num_mel_bins``...)
            for a randomly initialized encoder.
        config_overrides: config attributes replaced when loading ``model`` (``dropout``,
            ``encoder_layerdrop``...).
        pad_to_30s: encode every utterance in a zero-padded 30 s window, as the original model.
        freeze, freeze_steps, freeze_feature_encoder (the two convolutions), layer,
            layer_norm_before_sum, downsample: see :mod:`speechllm.nets.encoders.pretrained`.
    """

    family = "whisper"

    def __init__(
        self,
        input_size: int | None = None,
        model: str | None = None,
        model_config: dict[str, Any] | None = None,
        config_overrides: dict[str, Any] | None = None,
        pad_to_30s: bool = False,
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
            backbone = load_whisper_encoder(str(model), config_overrides)
        else:
            values = {**model_config, **(config_overrides or {})}
            backbone = HFWhisperEncoder(build_hf_config(WhisperConfig, values, "encoder_conf.model_config"))
        self.pad_to_30s = bool(pad_to_30s)
        self.frontend = WhisperLogMel(backbone.config.num_mel_bins)
        stride = HOP_LENGTH * backbone.conv1.stride[0] * backbone.conv2.stride[0]
        self.max_samples = backbone.config.max_source_positions * stride  # 1500 frames = 30 s
        # The convolutions are the "feature encoder" of freeze_feature_encoder.
        self._attach_backbone(backbone, nn.ModuleList([backbone.conv1, backbone.conv2]),
                              backbone.config.encoder_layers, backbone.config.d_model, SAMPLE_RATE / stride)

    def _backbone_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        mel_lens = (lengths + HOP_LENGTH - 1) // HOP_LENGTH  # as WhisperLogMel
        return (mel_lens - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1

    def _backbone_states(self, x: torch.Tensor, lengths: torch.Tensor,
                         all_layers: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        check_waveform(x, lengths, self.family)
        too_long = lengths > self.max_samples
        if too_long.any():
            i = int(too_long.nonzero()[0, 0])
            raise ValueError(f"whisper: utterance {i} of the batch is {int(lengths[i]) / SAMPLE_RATE:.2f} s; the "
                             f"encoder takes at most {self.max_samples / SAMPLE_RATE:.0f} s. Drop or segment longer "
                             f"utterances (e.g. a max-duration filter on the data dir)")
        enc = self.backbone
        mel, mel_lens = self.frontend(x, lengths, self.pad_to_30s)
        mel = mel.to(enc.conv1.weight.dtype)
        out_lens = self._backbone_output_lengths(lengths)
        # HF's WhisperEncoder.forward only accepts exactly 3000 mel frames and takes no padding mask,
        # so its steps are run here: conv1, conv2 (GELU), positions sliced to the length, the layers
        # with a key-padding mask, the final layer norm. Padded frames are zeroed between the convs
        # so that they reach the last valid frames as the zero padding of a lone utterance would.
        if self.pad_to_30s:
            h = F.gelu(enc.conv2(F.gelu(enc.conv1(mel))))
        else:
            mel_valid = valid_mask(mel_lens, mel.size(-1)).unsqueeze(1).to(mel.dtype)
            h = F.gelu(enc.conv1(mel * mel_valid)) * mel_valid
            h = F.gelu(enc.conv2(h))
        h = h.transpose(1, 2)
        h = h + enc.embed_positions.weight[: h.size(1)]
        h = F.dropout(h, p=enc.dropout, training=enc.training)
        attention_mask = None
        if not self.pad_to_30s:  # the original encoder attends over the whole 30 s window
            attention_mask = create_bidirectional_mask(config=enc.config, inputs_embeds=h,
                                                       attention_mask=valid_mask(out_lens, h.size(1)))
        states = [h]
        for layer in enc.layers:
            if not (enc.training and enc.layerdrop > 0.0 and torch.rand([]) < enc.layerdrop):
                out = layer(h, attention_mask)
                h = out[0] if isinstance(out, tuple) else out
            states.append(h)
        states[-1] = enc.layer_norm(h)
        if self.pad_to_30s:  # keep only the frames of the audio (the rest encodes the padding)
            states = [s[:, : int(out_lens.max())] for s in states]
        return (states if all_layers else states[-1:]), out_lens
