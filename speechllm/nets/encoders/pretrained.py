"""Shared machinery of the pretrained speech encoders: loading, freezing, layer choice, downsampling.

A subclass builds its backbone (a Hugging Face or torchaudio model) and implements
``_backbone_states(x, lengths, all_layers)``; this module turns that into the encoder contract of
``speechllm.nets.encoders``::

    forward(x, lengths) -> (out[B, T', D], out_lengths)      # padded frames are zero
    hidden_states(x, lengths) -> (list of L+1 [B, T', D], out_lengths)
    output_size() -> D,  frame_rate() -> output frames per second

Options shared by every pretrained encoder (``encoder_conf`` keys):

* ``freeze``: never train the backbone. Its parameters get ``requires_grad=False`` (so the Trainer,
  which optimizes the parameters that require grad, leaves them out and keeps no optimizer state
  for them) and it runs under ``torch.no_grad()`` in eval mode (no dropout, layer drop or masking;
  no activations kept for backward).
* ``freeze_steps: N``: fine-tune, but keep the backbone frozen for the first N training steps
  (a step = one forward pass in training mode with grad enabled, i.e. one micro-batch; with
  ``accum_grad: K`` use N*K for N optimizer updates). During those steps the backbone runs under
  ``no_grad`` in eval mode, so its parameters get ``grad=None`` and torch optimizers skip them (no
  update, no weight decay); their ``requires_grad`` stays True so the optimizer, built once at the
  start, already holds them when they unfreeze. The count lives in the persistent buffer
  ``train_steps``, so a resumed checkpoint continues it. Under DDP set
  ``ddp_find_unused_parameters: true`` (the backbone has no gradient while frozen).
* ``freeze_feature_encoder``: never train the convolutional feature encoder (the CNN on the
  waveform; Whisper: its two convolutions); usual when fine-tuning SSL models.
* ``layer``: ``null`` = the last layer (the model's final output), an int = that hidden state
  (``0`` = the input of the first transformer layer, i.e. after the CNN/embedding; ``L`` = the
  last), or ``"weighted_sum"`` = a learnable softmax-normalized weight per hidden state,
  initialized equal (SUPERB style); with ``layer_norm_before_sum: true`` each hidden state is layer
  normalized (no affine parameters) before the sum.
* ``downsample: k``: average pooling of k consecutive frames (stride k), which lowers the frame
  rate by k; the last window of an utterance averages only its valid frames, so
  ``out_lengths = ceil(lengths / k)``. Average pooling was chosen over frame stacking + linear
  because it has no parameters: it works the same on a fully frozen encoder and applies to every
  hidden state alike, so ``hidden_states()`` and ``forward()`` share one frame rate.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from speechllm.nets.encoders.conformer import make_pad_mask
from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # every pretrained encoder here takes 16 kHz audio
HUB_PROBE_TIMEOUT_S = 3.0

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# Loading: local directory, local cache, or the hub only when it is reachable (never a long hang)
# ----------------------------------------------------------------------------------------------

def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set (read now, not at import time)."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in values)


def hub_reachable(url: str | None = None, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) opens within ``timeout``.

    Without this check ``from_pretrained`` retries unreachable hosts for about a minute. With an
    HTTPS proxy configured a direct connection says nothing, so the proxy is trusted.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with a slash (or ~, ./) is meant as a path.
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def no_hub_message(name: str, family: str, reason: str, option: str = "encoder_conf.model") -> str:
    """The ConfigError text for a model that is neither local nor downloadable."""
    return (
        f"{option}: cannot load {family} model '{name}': {reason}. Without network access to the "
        f"Hugging Face hub the model must come from a local copy. Either set {option} to a local "
        f"directory written by save_pretrained (on a machine with network: "
        f"AutoModel.from_pretrained('{name}').save_pretrained('/path/to/dir'), copy the directory here, "
        f"then {option}: /path/to/dir), or pre-download it into a Hugging Face cache "
        f"(hf download {name}), make that cache available here and set HF_HOME to it "
        f"together with HF_HUB_OFFLINE=1 (local files only)."
    )


def load_from_hub_or_dir(load: Callable[[str, bool], T], name: str, family: str,
                         option: str = "encoder_conf.model", what: str | None = None,
                         message: Callable[[str], str] | None = None) -> T:
    """Call ``load(source, local_files_only)`` without ever waiting on an unreachable network.

    Order: an existing local directory; the local Hugging Face cache (the only source when
    ``HF_HUB_OFFLINE`` is set); the hub, only after a short reachability probe. A model found
    nowhere raises :class:`ConfigError` naming ``name`` and how to provide a local copy.
    ``what`` names the model in errors (default ``"<family> model"``); ``message(reason)`` gives
    the not-found text (default :func:`no_hub_message`), so LLMs can say how to save a tokenizer too.
    """
    what = what or f"{family} model"
    if message is None:
        message = lambda reason: no_hub_message(name, family, reason, option)  # noqa: E731
    path = Path(name).expanduser()
    if path.is_dir():
        return load(str(path), True)
    if _looks_like_path(name):
        raise ConfigError(f"{option}: directory {name} not found (expected a save_pretrained directory or a hub id)")
    try:
        return load(name, True)  # already in the local cache: no network needed
    except OSError as e:
        cache_error = e
    if hub_offline():
        reason = "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so the hub was not contacted"
        raise ConfigError(message(reason)) from cache_error
    if not hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        reason = f"it is not in the local Hugging Face cache and {endpoint} is unreachable (no network)"
        raise ConfigError(message(reason)) from cache_error
    try:
        return load(name, False)
    except OSError as e:
        raise ConfigError(f"{option}: cannot load {what} '{name}' from the hub: {e}") from e


def check_loading_info(info: dict[str, Any], name: str, family: str, n_params: int) -> None:
    """Refuse a checkpoint that filled none of the backbone's weights; warn about partial misses."""
    missing = sorted(info.get("missing_keys") or [])
    if missing and len(missing) >= n_params:
        raise ConfigError(f"encoder_conf.model: '{name}' holds no {family} encoder weights "
                          f"(all {len(missing)} parameters missing, e.g. {missing[:3]})")
    if missing:
        logger.warning("%s: %d parameter(s) not in the checkpoint '%s', randomly initialized: %s",
                       family, len(missing), name, ", ".join(missing[:10]))


def check_source(model: str | None, model_config: dict | None, family: str) -> None:
    """Exactly one of ``model`` (pretrained weights) and ``model_config`` (random init) is given."""
    if (model is None) == (model_config is None):
        raise ConfigError(f"encoder_conf for {family}: give exactly one of 'model' (a hub id or a save_pretrained "
                          f"directory) and 'model_config' (a config dict for a randomly initialized model)")
    if model_config is not None and not isinstance(model_config, dict):
        raise ConfigError(f"encoder_conf.model_config: expected a mapping, got {type(model_config).__name__}")


# ----------------------------------------------------------------------------------------------
# Tensor helpers
# ----------------------------------------------------------------------------------------------

def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool ``[B, max_len]``, True at valid positions (``t < lengths[b]``)."""
    return ~make_pad_mask(lengths, max_len)


def normalize_waveform(x: torch.Tensor, lengths: torch.Tensor, eps: float) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding stays zero.

    What the checkpoints' feature extractors do (``do_normalize``), computed on the valid part
    only so that padding does not change the statistics.
    """
    mask = valid_mask(lengths, x.size(1)).to(x.dtype)
    n = lengths.clamp(min=1).to(x.dtype).unsqueeze(1)
    mean = (x * mask).sum(1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * mask


def average_pool(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each window of ``k`` frames (stride ``k``) over valid frames only; ``ceil(len / k)`` outputs."""
    if k == 1:
        return x, lengths
    b, t, d = x.shape
    pad = (-t) % k
    valid = valid_mask(lengths, t).to(x.dtype)
    x = F.pad(x * valid.unsqueeze(-1), (0, 0, 0, pad))
    valid = F.pad(valid, (0, pad))
    sums = x.view(b, -1, k, d).sum(2)
    counts = valid.view(b, -1, k).sum(2, keepdim=True).clamp(min=1.0)
    return sums / counts, (lengths + k - 1) // k


def zero_padded_frames(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x[B, T, D]`` with frames ``t >= lengths[b]`` set to zero."""
    return x.masked_fill(make_pad_mask(lengths, x.size(1)).unsqueeze(-1), 0.0)


def check_waveform(x: torch.Tensor, lengths: torch.Tensor, family: str) -> None:
    """Fail early and clearly when an fbank batch reaches a waveform encoder."""
    if x.dim() != 2:
        raise ValueError(f"{family} encoder takes raw 16 kHz waveforms [B, samples] (input_kind 'waveform'), "
                         f"got a tensor of shape {tuple(x.shape)}; use a raw-audio dataset, not fbank features")
    if lengths.dim() != 1 or lengths.size(0) != x.size(0):
        raise ValueError(f"{family}: lengths must be [B] = [{x.size(0)}], got shape {tuple(lengths.shape)}")


# ----------------------------------------------------------------------------------------------
# The base class
# ----------------------------------------------------------------------------------------------

class PretrainedEncoder(nn.Module):
    """Base of the pretrained encoders: freezing, layer selection/weighted sum, downsampling.

    Subclasses call ``super().__init__(...)`` with the shared options, build ``backbone``, call
    :meth:`_attach_backbone`, and implement :meth:`_backbone_states`.
    """

    input_kind: ClassVar[str] = "waveform"
    family: ClassVar[str] = "pretrained"

    def __init__(
        self,
        freeze: bool = False,
        freeze_steps: int = 0,
        freeze_feature_encoder: bool = False,
        layer: int | str | None = None,
        layer_norm_before_sum: bool = False,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        if int(freeze_steps) < 0:
            raise ConfigError(f"encoder_conf.freeze_steps: must be >= 0, got {freeze_steps}")
        if freeze and int(freeze_steps) > 0:
            raise ConfigError("encoder_conf: 'freeze: true' keeps the encoder frozen for good; "
                              "'freeze_steps' only makes sense with 'freeze: false'")
        if isinstance(layer, bool) or not (layer is None or isinstance(layer, int) or layer == "weighted_sum"):
            raise ConfigError(f"encoder_conf.layer: expected null (last layer), an int or 'weighted_sum', "
                              f"got {layer!r}")
        if layer_norm_before_sum and layer != "weighted_sum":
            raise ConfigError("encoder_conf.layer_norm_before_sum needs layer: weighted_sum")
        if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
            raise ConfigError(f"encoder_conf.downsample: expected an int >= 1, got {downsample!r}")
        self.freeze = bool(freeze)
        self.freeze_steps = int(freeze_steps)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.layer = layer
        self.layer_norm_before_sum = bool(layer_norm_before_sum)
        self.downsample = downsample
        # Training forward passes seen so far; persistent so that resuming continues the count.
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self._logged_unfreeze = False

    # -- set up by subclasses ---------------------------------------------------------------

    def _attach_backbone(self, backbone: nn.Module, feature_encoder: nn.Module | None, num_layers: int,
                         hidden_size: int, native_frame_rate: float) -> None:
        """Register the built backbone and apply the freezing and layer options to it."""
        self.backbone = backbone
        self.num_layers = int(num_layers)
        self._hidden_size = int(hidden_size)
        self._native_frame_rate = float(native_frame_rate)
        if isinstance(self.layer, int):
            if not -(self.num_layers + 1) <= self.layer <= self.num_layers:
                raise ConfigError(f"encoder_conf.layer: {self.layer} out of range; this {self.family} model has "
                                  f"hidden states 0..{self.num_layers} (0 = after the CNN/embedding)")
            self.layer = self.layer % (self.num_layers + 1)
        if self.layer == "weighted_sum":
            # zeros -> softmax gives every hidden state the same weight at the start
            self.layer_weights = nn.Parameter(torch.zeros(self.num_layers + 1))
        if self.freeze:
            backbone.requires_grad_(False)
        elif self.freeze_feature_encoder:
            if feature_encoder is None:
                raise ConfigError(f"encoder_conf.freeze_feature_encoder: {self.family} has no feature encoder")
            self._freeze_feature_encoder(feature_encoder)

    def _freeze_feature_encoder(self, feature_encoder: nn.Module) -> None:
        feature_encoder.requires_grad_(False)

    def _backbone_states(self, x: torch.Tensor, lengths: torch.Tensor,
                         all_layers: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone outputs ``([B, T, D], ...)`` and their lengths.

        ``all_layers``: all ``num_layers + 1`` hidden states (0 = embedding, last = final output);
        otherwise a one-element list holding only the final output. Padded frames may be garbage.
        """
        raise NotImplementedError

    @property
    def padding_invariant(self) -> bool:
        """Whether padding a batch leaves the outputs of valid frames unchanged (attention masks used)."""
        return True

    # -- the encoder contract -----------------------------------------------------------------

    def output_size(self) -> int:
        """Dimension D of the output (the backbone's hidden size)."""
        return self._hidden_size

    def frame_rate(self) -> float:
        """Output frames per second (the backbone's rate divided by ``downsample``)."""
        return self._native_frame_rate / self.downsample

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs of ``lengths`` (samples, or frames of ``[B, T, F]`` features): the
        lengths :meth:`forward` returns, without running it (speech-text interleaving needs them)."""
        lengths = self._backbone_output_lengths(lengths.to(torch.long))
        return (lengths + self.downsample - 1) // self.downsample

    def _backbone_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """The backbone's output frames for inputs of ``lengths`` (before ``downsample``)."""
        raise NotImplementedError

    def frozen_now(self) -> bool:
        """Whether the backbone is frozen for the next forward (``freeze``, or within ``freeze_steps``)."""
        # int() of the buffer syncs with the GPU: only paid when freeze_steps is used
        return self.freeze or (self.freeze_steps > 0 and int(self.train_steps) < self.freeze_steps)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``x`` (``[B, S]`` waveform or ``[B, T, F]`` features, see ``input_kind``) with ``lengths[B]``."""
        frozen = self.frozen_now()
        if self.training and torch.is_grad_enabled():
            self._count_step(frozen)
        states, out_lens = self._run_backbone(x, lengths, all_layers=self.layer is not None, frozen=frozen)
        out = self._combine(states)
        out = zero_padded_frames(out, out_lens)
        return average_pool(out, out_lens, self.downsample)

    def hidden_states(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every hidden state (``num_layers + 1`` tensors ``[B, T', D]``, index 0 = after the CNN/embedding,
        last = the final output), padded frames zero, downsampled like :meth:`forward`."""
        states, lens = self._run_backbone(x, lengths, all_layers=True, frozen=self.frozen_now())
        pooled = [average_pool(zero_padded_frames(h, lens), lens, self.downsample)[0] for h in states]
        return pooled, (lens + self.downsample - 1) // self.downsample

    # -- internals --------------------------------------------------------------------------

    def _count_step(self, frozen: bool) -> None:
        with torch.no_grad():
            self.train_steps += 1
        if self.freeze_steps and not frozen and not self._logged_unfreeze:
            logger.info("%s encoder: fine-tuning the backbone from training step %d on (freeze_steps: %d)",
                        self.family, int(self.train_steps), self.freeze_steps)
            self._logged_unfreeze = True

    @contextlib.contextmanager
    def _frozen_context(self, frozen: bool) -> Iterator[None]:
        """no_grad + eval mode for a frozen backbone; restores its mode afterwards."""
        if not frozen:
            yield
            return
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.backbone.train(was_training)

    def _run_backbone(self, x: torch.Tensor, lengths: torch.Tensor, all_layers: bool,
                      frozen: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        lengths = lengths.to(device=x.device, dtype=torch.long)
        with self._frozen_context(frozen):
            states, out_lens = self._backbone_states(x, lengths, all_layers)
        if all_layers and len(states) != self.num_layers + 1:
            raise RuntimeError(f"{self.family}: backbone gave {len(states)} hidden states, "
                               f"expected {self.num_layers + 1}")
        return states, out_lens

    def _combine(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Apply the ``layer`` option to the hidden states."""
        if self.layer is None:
            return states[-1]
        if isinstance(self.layer, int):
            return states[self.layer]
        weights = torch.softmax(self.layer_weights, dim=0)
        out = 0.0
        for w, h in zip(weights, states):
            if self.layer_norm_before_sum:
                h = F.layer_norm(h, h.shape[-1:])
            out = out + w * h
        return out
