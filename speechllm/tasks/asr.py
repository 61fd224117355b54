"""The one ASR build path: a YAML-like config dict -> :class:`CTCAttentionModel`.

Config keys (ESPnet style; other top-level keys, e.g. the Trainer's, are ignored here)::

    input_size: 80                 # feature dimension
    encoder: conformer             # a key of speechllm.nets.encoders.ENCODERS
    encoder_conf: {output_size: 256, num_blocks: 12, ...}
    decoder: transformer           # a key of speechllm.nets.decoders.DECODERS (unused if ctc_weight=1)
    decoder_conf: {num_blocks: 6, ...}
    model_conf: {ctc_weight: 0.3, lsm_weight: 0.1, length_normalized_loss: false}
    normalize: global_mvn          # a key of NORMALIZERS, or null
    normalize_conf: {stats_file: dump/fbank/train_sp/cmvn.json}
    specaug: true                  # true/false (or the name "specaug")
    specaug_conf: {num_time_masks: 2, ...}
    input: fbank                   # what the datasets read, a key of INPUTS; default from the
                                   # encoder's input_kind (waveform -> raw, else fbank)
    input_conf: {sample_rate: 16000}   # raw only
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from torch import nn

from speechllm.models.ctc_attention import CTCAttentionModel
from speechllm.nets.decoders import DECODERS
from speechllm.nets.encoders import ENCODERS
from speechllm.utils.config import ConfigError


def _build_global_mvn(stats_file: str | os.PathLike | None = None, utterance_mean: bool = False) -> nn.Module:
    # Imported here so that building a model without normalization never needs the features stack.
    from speechllm.features.cmvn import GlobalCMVN, load_cmvn_stats

    if not stats_file:
        raise ConfigError("normalize: global_mvn needs normalize_conf.stats_file (the cmvn.json of the training set)")
    if not os.path.isfile(stats_file):
        raise ConfigError(f"normalize_conf.stats_file: {stats_file} not found")
    return GlobalCMVN(*load_cmvn_stats(stats_file), utterance_mean=utterance_mean)


def _build_specaug(**conf: Any) -> nn.Module:
    from speechllm.features.specaug import SpecAugment

    return _construct(SpecAugment, "specaug_conf", conf)


NORMALIZERS: dict[str, Callable[..., nn.Module]] = {"global_mvn": _build_global_mvn}
SPECAUGS: dict[str, Callable[..., nn.Module]] = {"specaug": _build_specaug}


def _lookup(registry: dict[str, Callable], key: str, name: Any) -> Callable:
    if name not in registry:
        raise ConfigError(f"{key}: unknown choice {name!r}; choose one of {sorted(registry)}")
    return registry[name]


def _construct(cls: Callable, conf_key: str, conf: Any, **fixed: Any) -> Any:
    """``cls(**fixed, **conf)``, turning a bad keyword in ``conf`` into a ConfigError naming the choices."""
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        raise ConfigError(f"{conf_key}: expected a mapping, got {type(conf).__name__}")
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [n for n in params if n not in fixed and n != "self"]
        unknown = sorted(set(conf) - set(allowed))
        if unknown:
            raise ConfigError(f"{conf_key}: unknown option(s) {unknown} for {cls.__name__}; allowed: {allowed}")
    return cls(**fixed, **conf)


def _specaug_name(value: Any) -> str | None:
    # `specaug: true` means the default augmentation; ESPnet configs write its name instead.
    if value is None or value is False:
        return None
    return "specaug" if value is True else value


def build_encoder(config: dict) -> nn.Module:
    """``ENCODERS[config["encoder"]](input_size=config["input_size"], **config["encoder_conf"])``."""
    input_size = int(config.get("input_size", 80))
    encoder_cls = _lookup(ENCODERS, "encoder", config.get("encoder", "conformer"))
    return _construct(encoder_cls, "encoder_conf", config.get("encoder_conf"), input_size=input_size)


def build_normalize(config: dict, cmvn_stats_path: str | os.PathLike | None = None) -> nn.Module | None:
    """The feature normalization named by ``normalize`` (None when off); ``cmvn_stats_path``
    replaces ``normalize_conf.stats_file``."""
    if not config.get("normalize"):
        return None
    normalize_conf = dict(config.get("normalize_conf") or {})
    if cmvn_stats_path is not None:
        normalize_conf["stats_file"] = str(cmvn_stats_path)
    return _construct(_lookup(NORMALIZERS, "normalize", config["normalize"]), "normalize_conf", normalize_conf)


def build_specaug(config: dict) -> nn.Module | None:
    """The ``specaug`` of the config (``SPECAUGS`` key or true, with ``specaug_conf``), or None."""
    name = _specaug_name(config.get("specaug"))
    if name is None:
        return None
    return _construct(_lookup(SPECAUGS, "specaug", name), "specaug_conf", config.get("specaug_conf"))


def build_model(config: dict, vocab_size: int, cmvn_stats_path: str | os.PathLike | None = None) -> CTCAttentionModel:
    """Build the ASR model described by ``config`` for a vocabulary of ``vocab_size`` tokens.

    Registries (plain dicts) map names to classes: ``ENCODERS``, ``DECODERS``, ``NORMALIZERS``,
    ``SPECAUGS``. Unknown names or options raise :class:`ConfigError` listing the choices.
    ``cmvn_stats_path``, when given, replaces ``normalize_conf.stats_file`` (e.g. the copy inside
    a packed model directory).
    """
    encoder = build_encoder(config)
    model_conf = dict(config.get("model_conf") or {})
    ctc_weight = float(model_conf.get("ctc_weight", 0.3))
    decoder = None
    if ctc_weight < 1.0:  # a pure CTC model has no decoder
        decoder_cls = _lookup(DECODERS, "decoder", config.get("decoder", "transformer"))
        decoder = _construct(decoder_cls, "decoder_conf", config.get("decoder_conf"),
                             vocab_size=vocab_size, encoder_output_size=encoder.output_size())

    normalize = build_normalize(config, cmvn_stats_path)
    specaug = build_specaug(config)
    return _construct(CTCAttentionModel, "model_conf", model_conf, vocab_size=vocab_size, encoder=encoder,
                      decoder=decoder, normalize=normalize, specaug=specaug)


# ----------------------------------------------------------------------------------------
# What the model reads: the ``input`` key
# ----------------------------------------------------------------------------------------
# fbank:  feats.scp matrices [T, 80] of the data dir (stage 3), the encoder's input_kind "fbank"
# raw:    wav.scp (+ segments) waveforms [S], the encoder runs on audio in the graph ("waveform")
# dumped: feats.scp matrices [T, D] written by dump_encoder_features (stage 3b), read like fbank;
#         the dir's dump_info.yaml is checked against input_size (encoder: precomputed)
INPUTS = ("fbank", "raw", "dumped")


def resolve_input(config: dict) -> str:
    """The ``input`` of ``config``, or the default for its encoder; checks that the pieces fit.

    Raw audio goes straight into the encoder, so ``normalize``/``specaug`` (which work on
    ``[B, T, D]`` features) must be off; a waveform encoder cannot read feature matrices.
    """
    encoder_cls = _lookup(ENCODERS, "encoder", config.get("encoder", "conformer"))
    kind = getattr(encoder_cls, "input_kind", "fbank")
    name = config.get("input") or ("raw" if kind == "waveform" else "fbank")
    if name not in INPUTS:
        raise ConfigError(f"input: unknown choice {name!r}; choose one of {list(INPUTS)}")
    if (name == "raw") != (kind == "waveform"):
        wants = "raw" if kind == "waveform" else "fbank or dumped"
        raise ConfigError(f"input: {name} does not fit encoder {config.get('encoder', 'conformer')!r} "
                          f"(input_kind {kind!r}); use input: {wants}")
    if name == "raw":
        on = [k for k in ("normalize", "specaug") if _specaug_name(config.get(k)) is not None]
        if on:
            raise ConfigError(f"input: raw feeds audio [B, S] to the encoder; {' and '.join(on)} work on "
                              f"features [B, T, D]: set {', '.join(f'{k}: null' for k in on)}")
    return name


def build_dataset(config: dict, data_dir: str | os.PathLike, tokenizer: Any) -> Any:
    """The training/validation dataset of ``data_dir`` for the config's ``input``."""
    from speechllm.data.dataset import ASRDataset, RawAudioDataset

    name = resolve_input(config)
    if name == "raw":
        conf = dict(config.get("input_conf") or {})
        return _construct(RawAudioDataset, "input_conf", conf, data_dir=data_dir, tokenizer=tokenizer)
    if name == "dumped":
        check_dump_info(config, data_dir)
    return ASRDataset(data_dir, tokenizer)


def check_dump_info(config: dict, data_dir: str | os.PathLike) -> dict | None:
    """Compare the feature dimension in ``data_dir/dump_info.yaml`` (if any) with ``input_size``."""
    from speechllm.utils.config import load_yaml

    path = os.path.join(data_dir, "dump_info.yaml")
    if not os.path.isfile(path):
        return None
    info = load_yaml(path)
    dim, input_size = info.get("dim"), int(config.get("input_size", 80))
    if dim is not None and int(dim) != input_size:
        raise ConfigError(f"input_size {input_size} does not match the dumped features: {path} says dim {dim} "
                          f"({info.get('encoder')}, layer {info.get('layer')})")
    return info
