"""Speech-LLM task: ``build_model(config)``, its datasets, and the batches the model reads.

A speech LLM is ``encoder -> projector -> decoder-only LLM`` (:class:`SpeechLLM`). The YAML keys::

    input: fbank | raw | dumped        # as for ASR (speechllm.tasks.asr.resolve_input)
    encoder: conformer                 # any ENCODERS key, with encoder_conf
    normalize: global_mvn              # fbank input only, with normalize_conf.stats_file
    specaug: true                      # SpecAugment (specaug_conf) after the normalization, in
                                       # training only (also in front of a frozen encoder)
    encoder_init: exp/asr/valid.acc.ave.pt   # optional: an ASR checkpoint whose encoder.* and
                                             # normalize.* weights start the encoder
    projector: linear                  # PROJECTORS key, with projector_conf (downsample, ...)
    llm: Qwen/Qwen2.5-0.5B-Instruct    # hub id or transformers directory ...
    llm_config: {model_type: llama, ...}     # ... or a random LLM built from a config (tests)
    llm_conf: {torch_dtype: float32}   # options of speechllm.llm.loading.load_causal_lm
    lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}   # or null
    mtbi: {targets: ..., transcribe_ratio: 0.3, ...}   # optional: speechllm.mtbi.collate
    freeze: ["encoder.*"]              # fnmatch patterns on parameter names; unfreeze: [...]
    prompts: {file: conf/prompts/mini_tasks.yaml, task: transcribe}   # or {wordings: [...]}
    system_prompt: null

Training targets are transcripts (ASR fine-tuning): each example's user turn is one of the
``transcribe`` wordings (chosen at random per example in training, the first one in validation
and decoding) with the audio where the wording has ``{text}``; the response is the transcript.
An ``mtbi:`` block (:mod:`speechllm.mtbi.collate`) trains by multi-task behavior imitation
instead: the frozen LLM's answers to task prompts about the transcript, mixed with
transcription, optionally with speech-text interleaving and a token-level KL term; validation
stays transcription with the first wording, so valid accuracy compares across systems.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from speechllm.data.dataset import pad_sequences
from speechllm.data.example_rng import example_rng
from speechllm.llm.prompting import AUDIO_PLACEHOLDER, render_prompt_pieces, response_ids, transcript_ids
from speechllm.llm.text_tasks import PLACEHOLDER, load_prompt_set
from speechllm.nets.projectors import PROJECTORS
from speechllm.tasks import asr
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError, load_yaml

logger = logging.getLogger(__name__)

# The wording used when a config names none.
DEFAULT_WORDINGS = ["Transcribe the audio: {text}"]


class NormalizedEncoder(nn.Module):
    """Feature normalization (global CMVN) and SpecAugment in front of an encoder; the encoder
    interface again. Either may be None. SpecAugment sits after the normalization, as in the ASR
    model (:class:`~speechllm.models.ctc_attention.CTCAttentionModel`) whose encoder is reused."""

    def __init__(self, normalize: nn.Module | None, encoder: nn.Module, specaug: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.specaug = specaug
        self.encoder = encoder
        self.input_kind = getattr(encoder, "input_kind", "fbank")

    def output_size(self) -> int:
        return self.encoder.output_size()

    def frame_rate(self) -> float:
        return self.encoder.frame_rate()

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder.output_lengths(lengths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize is not None:
            x = self.normalize(x, lengths)
        if self.specaug is not None:
            x = self.specaug(x, lengths)  # a no-op in eval mode
        return self.encoder(x, lengths)


def _init_encoder_from_asr(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Copy the ``encoder.*`` (and ``normalize.*``) weights of an ASR checkpoint into ``encoder``
    (a :class:`NormalizedEncoder` or a bare encoder); every encoder weight must be found."""
    state = load_model_state_dict(path)
    if isinstance(encoder, NormalizedEncoder):
        wanted = {f"encoder.{k}": f"encoder.{k}" for k in encoder.encoder.state_dict()}
        if encoder.normalize is not None:
            wanted.update({f"normalize.{k}": f"normalize.{k}" for k in encoder.normalize.state_dict()})
    else:
        wanted = {f"encoder.{k}": k for k in encoder.state_dict()}
    missing = [src for src in wanted if src not in state]
    if missing:
        raise ConfigError(f"encoder_init {path}: the checkpoint lacks {len(missing)} encoder weights "
                          f"(e.g. {missing[0]}); is it a model with the same encoder_conf?")
    # A deeper checkpoint encoder would otherwise load silently into its first blocks.
    prefixes = ("encoder.", "normalize.") if isinstance(encoder, NormalizedEncoder) else ("encoder.",)
    extra = [k for k in state if k.startswith(prefixes) and k not in wanted]
    own = encoder.state_dict()
    resized = [f"{src} {tuple(state[src].shape)} vs {tuple(own[dst].shape)}" for src, dst in wanted.items()
               if tuple(state[src].shape) != tuple(own[dst].shape)]
    if extra or resized:
        what = f"{len(extra)} encoder weights this encoder_conf lacks (e.g. {extra[0]})" if extra else \
            f"{len(resized)} weights of another shape (e.g. {resized[0]})"
        raise ConfigError(f"encoder_init {path}: the checkpoint has {what}; make encoder_conf equal the "
                          "checkpoint model's (its config.yaml)")
    encoder.load_state_dict({dst: state[src] for src, dst in wanted.items()})
    logger.info("encoder initialized from %s (%d tensors)", path, len(wanted))


def _check_features_of_encoder_init(config: dict, path: str | os.PathLike) -> None:
    """The encoder of ``encoder_init`` must see the features it was trained on: where the
    checkpoint's training ``config.yaml`` lies beside it (an experiment dir), its ``normalize``
    and ``normalize_conf.utterance_mean`` must equal ``config``'s (the weights do not show them)."""
    asr_config_path = Path(path).parent / "config.yaml"
    if not asr_config_path.is_file():
        logger.info("encoder_init %s: no config.yaml beside it; its feature normalization is not checked", path)
        return
    trained, here = (
        (cfg.get("normalize"), bool((cfg.get("normalize_conf") or {}).get("utterance_mean", False)))
        for cfg in (load_yaml(asr_config_path), config)
    )
    if trained != here:
        raise ConfigError(
            f"encoder_init {path}: its model was trained with normalize {trained[0]!r}, utterance_mean "
            f"{trained[1]} ({asr_config_path}), this config has normalize {here[0]!r}, utterance_mean "
            f"{here[1]}; make them equal"
        )


def build_llm(config: dict) -> tuple[nn.Module, Any]:
    """The LLM and its tokenizer from ``llm`` (hub id / directory) or ``llm_config`` (random)."""
    from speechllm.llm.loading import build_causal_lm_from_config, load_causal_lm, load_tokenizer

    llm_conf = dict(config.get("llm_conf") or {})
    if config.get("llm"):
        name = str(config["llm"])
        return load_causal_lm(name, **llm_conf), load_tokenizer(name)
    if config.get("llm_config"):
        if not config.get("tokenizer"):
            raise ConfigError("llm_config builds a random LLM; also give tokenizer: <dir or hub id>")
        return build_causal_lm_from_config(dict(config["llm_config"]), **llm_conf), load_tokenizer(str(config["tokenizer"]))
    raise ConfigError("the speech LLM needs llm: <hub id or directory> (or llm_config + tokenizer)")


def build_model(config: dict, cmvn_stats_path: str | os.PathLike | None = None) -> nn.Module:
    """Build the :class:`SpeechLLM` described by ``config`` (see the module docstring).

    ``cmvn_stats_path``, when given, replaces ``normalize_conf.stats_file``.
    """
    from speechllm.llm.adapters import apply_freezing, apply_lora
    from speechllm.models.speech_llm import SpeechLLM

    encoder = asr.build_encoder(config)
    normalize = asr.build_normalize(config, cmvn_stats_path)
    specaug = asr.build_specaug(config)
    if normalize is not None or specaug is not None:
        encoder = NormalizedEncoder(normalize, encoder, specaug)
    if config.get("encoder_init"):
        _check_features_of_encoder_init(config, config["encoder_init"])
        _init_encoder_from_asr(encoder, config["encoder_init"])
    llm, tokenizer = build_llm(config)
    projector_cls = asr._lookup(PROJECTORS, "projector", config.get("projector", "linear"))
    projector_conf = dict(config.get("projector_conf") or {})
    if getattr(projector_cls, "reads_asr_ctc_head", False) and config.get("encoder_init") \
            and projector_conf.get("ctc_init") is None and projector_conf.get("vocab_size") is None:
        projector_conf["ctc_init"] = config["encoder_init"]  # the CTC head of the encoder's own ASR model
    reads_llm = getattr(projector_cls, "reads_llm_embeddings", False)
    if reads_llm and projector_conf.get("vocab_size") is None:
        projector_conf["vocab_size"] = llm.get_input_embeddings().num_embeddings  # e.g. ctc_text's head
    projector = asr._construct(projector_cls, "projector_conf", projector_conf,
                               input_size=encoder.output_size(), output_size=llm.config.hidden_size)
    if reads_llm:
        projector.bind_llm_embeddings(llm.get_input_embeddings())
    lora = config.get("lora")
    if lora:
        llm = asr._construct(apply_lora, "lora", dict(lora), llm=llm)
    mtbi = dict(config.get("mtbi") or {})
    model = SpeechLLM(encoder, projector, llm, tokenizer,
                      downsample_check=bool(config.get("downsample_check", True)), config=config,
                      kl_weight=float(mtbi.get("kl_weight", 0.0)), kl_temperature=float(mtbi.get("kl_temperature", 1.0)))
    apply_freezing(model, list(config.get("freeze") or []), list(config.get("unfreeze") or []))
    return model


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------

def prompt_wordings(config: dict, split: str = "train") -> list[str]:
    """The user-turn wordings of the config's ``prompts``, with ``{text}`` where the audio goes.

    ``prompts: {file: PATH, task: transcribe}`` reads a prompt file (speechllm.llm.text_tasks)
    and keeps the wordings of ``split``; ``prompts: {wordings: [...]}`` lists them inline.
    """
    conf = dict(config.get("prompts") or {})
    if conf.get("file"):
        prompt_set = load_prompt_set(conf["file"])
        task = conf.get("task", "transcribe")
        if task not in prompt_set.tasks:
            raise ConfigError(f"prompts.task {task!r} is not in {conf['file']} (tasks: {sorted(prompt_set.tasks)})")
        wordings = [w.text for w in prompt_set.tasks[task].wordings if w.split == split]
        if not wordings:
            raise ConfigError(f"{conf['file']}: task {task!r} has no {split} wordings")
        return wordings
    wordings = list(conf.get("wordings") or DEFAULT_WORDINGS)
    bad = [w for w in wordings if w.count(PLACEHOLDER) != 1]
    if bad:
        raise ConfigError(f"prompts.wordings: each wording needs exactly one {PLACEHOLDER}, not {bad[0]!r}")
    return wordings


def user_turn(wording: str) -> str:
    """A wording with the audio placeholder where its ``{text}`` is."""
    return wording.replace(PLACEHOLDER, AUDIO_PLACEHOLDER)


class SpeechLLMCollate:
    """Items ``{"utt_id", "feats", "text"}`` -> the :class:`SpeechLLM` batch (one audio slot each).

    Args:
        tokenizer: the LLM's tokenizer (chat template).
        wordings: user-turn wordings with ``{text}``; in training one is drawn per example
            (:func:`~speechllm.data.example_rng.example_rng` of ``seed``, the epoch and the
            utterance: independent of batching, workers and resumes), otherwise the first is used.
        train: draw wordings at random.
        system: optional system prompt.
        with_targets: add ``response_ids`` (the transcript); False for decoding.
        seed: the training seed.
    """

    def __init__(self, tokenizer: Any, wordings: Sequence[str], train: bool, system: str | None = None,
                 with_targets: bool = True, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.wordings = list(wordings)
        self.train = train
        self.system = system
        self.with_targets = with_targets
        self.seed, self.epoch = int(seed), 1
        self._cache: dict[str, Any] = {}  # wording -> PromptPieces (the same for every example)

    def set_epoch(self, epoch: int) -> None:
        """The Trainer's epoch (1-based): it seeds the draws with the utterance."""
        self.epoch = epoch

    def _pieces(self, user: str) -> Any:
        if user not in self._cache:
            self._cache[user] = render_prompt_pieces(self.tokenizer, user, self.system)
        return self._cache[user]

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise ValueError("SpeechLLMCollate: empty batch")
        feats, feats_lens = pad_sequences([it["feats"] for it in items], 0.0, torch.float32)
        users = [user_turn(example_rng(self.seed, self.epoch, it["utt_id"]).choice(self.wordings) if self.train
                           else self.wordings[0]) for it in items]
        batch = {
            "utt_ids": [it["utt_id"] for it in items],
            "feats": feats,
            "feats_lens": feats_lens,
            "prompts": [self._pieces(u) for u in users],
            "audio_spans": [[(i, 0, -1)] for i in range(len(items))],
        }
        if self.with_targets:
            batch["response_ids"] = [response_ids(self.tokenizer, u, it["text"], self.system)
                                     for u, it in zip(users, items)]
            batch["transcript_ids"] = [transcript_ids(self.tokenizer, it["text"]) for it in items]
        return batch


def build_dataset(config: dict, data_dir: str | os.PathLike) -> Any:
    """Audio (or features) and transcripts of ``data_dir``, as the config's ``input`` says."""
    return asr.build_dataset(config, data_dir, tokenizer=None)


def resolve_input(config: dict) -> str:
    """The config's ``input`` (``fbank``, ``raw`` or ``dumped``), checked against its encoder."""
    return asr.resolve_input(config)


def data_seconds_per_length(dataset: Any) -> float:
    """Seconds per unit of ``feats_lens`` (10 ms fbank frames, or samples of raw audio)."""
    return 0.01 / int(getattr(dataset, "length_per_bin", 1))


def checkpoint_config_path(exp_dir: str | os.PathLike) -> Path:
    """``exp_dir/config.yaml``: the resolved training config decoding and export rebuild from."""
    return Path(exp_dir) / "config.yaml"
