"""MTBI training batches: behavior-imitation targets, plain transcription, speech-text interleaving.

The ``mtbi:`` block of a speech-LLM training config (:mod:`speechllm.tasks.sllm`)::

    mtbi:
      targets: data/mtbi/train_targets.jsonl   # the frozen LLM's answers (bin/mtbi_make_targets,
                                               # --splits train); checked for held-out leaks
      transcribe_ratio: 0.3     # share of examples that are plain transcription (true transcript)
      transcribe_task: transcribe   # the prompt-set task whose train wordings ask for a transcript
      tasks: null               # imitation tasks to use (null: every task in the targets file);
                                # the ablation over the number of tasks
      word_align: null          # CTM of the training set (bin/align_words); needed for interleaving
      interleave_prob: 0.0      # share of examples whose {text} mixes text words and speech spans
      interleave: {mode: words, ratio: 0.5, span_words: [1, 3]}   # speechllm.mtbi.interleave
      kl_weight: 0.0            # token-level imitation (SpeechLLM.kl_weight): KL(text-conditioned
      kl_temperature: 1.0       #   frozen LLM || speech-conditioned model) on the response tokens

Each training utterance gives one example per epoch, drawn by :class:`MTBICollate`:

* with probability ``transcribe_ratio`` (or when the utterance has no imitation target), a
  transcription example: a train wording of ``transcribe_task`` and the true transcript;
* otherwise one of the utterance's imitation targets, at random: its wording and the frozen
  LLM's text-conditioned answer. Targets of copy tasks (``answer_task`` repeat, e.g. repeat and
  transcribe) are not used: their right answer is the transcript itself, which the
  transcription examples already give exactly, while a small LLM's copy drifts.

The ``{text}`` of the wording is then, with probability ``interleave_prob`` (when the utterance
has a word alignment), a mix of text words and speech spans (:func:`speechllm.mtbi.interleave.interleave`),
else the whole utterance as speech. The target stays the answer to the full text.

With ``kl_weight > 0`` the batch also holds ``teacher_prompt_ids``: the same prompt with the
transcript as text, which :class:`~speechllm.models.speech_llm.SpeechLLM` feeds to its frozen LLM
(LoRA disabled) to get the text-conditioned distribution over the same response tokens.

Every choice for an utterance is drawn from its own generator
(:func:`speechllm.data.example_rng.example_rng`: training seed, epoch, utterance id), so an
epoch's examples do not depend on batching, DataLoader workers or a resume.
"""
from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from speechllm.align import read_ctm
from speechllm.data.dataset import pad_sequences
from speechllm.data.example_rng import example_rng
from speechllm.llm.prompting import AUDIO_PLACEHOLDER, render_prompt_pieces, response_ids, transcript_ids
from speechllm.llm.text_tasks import PLACEHOLDER, PromptSet, load_prompt_set
from speechllm.mtbi.interleave import InterleaveConfig, interleave
from speechllm.mtbi.targets import check_targets_file
from speechllm.tasks.asr import _construct
from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

COPY_ANSWER = "repeat"  # answer_task of tasks whose answer is the transcript itself


@dataclass
class MTBIConfig:
    """The ``mtbi:`` block (see the module docstring)."""

    targets: str | None = None
    transcribe_ratio: float = 0.3
    transcribe_task: str = "transcribe"
    tasks: list[str] | None = None
    word_align: str | None = None
    interleave_prob: float = 0.0
    interleave: dict = field(default_factory=dict)
    kl_weight: float = 0.0
    kl_temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in ("transcribe_ratio", "interleave_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"mtbi.{name}: expected a number in [0, 1], got {value!r}")
        if not isinstance(self.kl_weight, (int, float)) or self.kl_weight < 0:
            raise ConfigError(f"mtbi.kl_weight: expected a number >= 0, got {self.kl_weight!r}")
        if not isinstance(self.kl_temperature, (int, float)) or self.kl_temperature <= 0:
            raise ConfigError(f"mtbi.kl_temperature: expected a number > 0, got {self.kl_temperature!r}")
        if self.transcribe_ratio < 1.0 and not self.targets:
            raise ConfigError("mtbi.targets: needed unless transcribe_ratio is 1 (made by speechllm.bin.mtbi_make_targets)")
        if self.interleave_prob > 0 and not self.word_align:
            raise ConfigError("mtbi.word_align: interleave_prob > 0 needs the training set's word alignment "
                              "(made by speechllm.bin.align_words)")
        self.interleave_config = InterleaveConfig.from_dict(self.interleave)

    @classmethod
    def from_dict(cls, conf: Mapping[str, Any] | None) -> "MTBIConfig":
        """From the YAML block (None: the defaults); unknown keys are a :class:`ConfigError`."""
        return _construct(cls, "mtbi", conf)


def load_imitation_targets(path: str | Path, prompts: PromptSet, tasks: Sequence[str] | None) -> dict[str, list[dict]]:
    """utt_id -> imitation records of a training targets file (held-out leaks refused), without
    copy tasks and restricted to ``tasks`` when given; counts are logged."""
    records = check_targets_file(path, prompts)
    if tasks is not None:
        unknown = sorted(set(tasks) - {r["task"] for r in records})
        if unknown:
            raise ConfigError(f"mtbi.tasks: {unknown} not in {path} (it has {sorted({r['task'] for r in records})})")
    by_utt: dict[str, list[dict]] = defaultdict(list)
    kept, skipped = Counter(), Counter()
    for rec in records:
        if rec.get("answer_task") == COPY_ANSWER:
            skipped[f"{rec['task']} (copy task)"] += 1
        elif tasks is not None and rec["task"] not in tasks:
            skipped[f"{rec['task']} (not in mtbi.tasks)"] += 1
        else:
            by_utt[rec["utt_id"]].append(rec)
            kept[rec["task"]] += 1
    logger.info("%s: %d imitation targets for %d utterances (%s); not used: %s", path, sum(kept.values()),
                len(by_utt), ", ".join(f"{t} {n}" for t, n in sorted(kept.items())) or "none",
                ", ".join(f"{t} {n}" for t, n in sorted(skipped.items())) or "none")
    if not by_utt:
        raise ConfigError(f"{path}: no usable imitation targets (tasks {tasks})")
    return dict(by_utt)


class MTBICollate:
    """Items ``{"utt_id", "feats", "text"}`` -> a :class:`SpeechLLM` training batch (module docstring).

    Args:
        tokenizer: the LLM's tokenizer.
        config: the ``mtbi:`` block.
        prompts: the prompt set (the transcription wordings come from its ``transcribe_task``).
        targets: utt_id -> imitation records (:func:`load_imitation_targets`).
        word_align: utt_id -> ``[(word, start_s, end_s), ...]`` (:func:`speechllm.align.read_ctm`).
        enc_lens: input frames -> encoder frames (the encoder's ``output_lengths``); needed to
            interleave.
        frame_shift: seconds per encoder frame; min_frames: fewest encoder frames of a speech
            span (:func:`speechllm.mtbi.interleave.min_span_frames` of the projector).
        system: optional system prompt.
        seed: the training seed; with the epoch and the utterance id it seeds each example's draws.
    """

    def __init__(self, tokenizer: Any, config: MTBIConfig, prompts: PromptSet, targets: dict[str, list[dict]],
                 word_align: dict[str, list] | None = None, enc_lens: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 frame_shift: float = 0.0, min_frames: int = 1, system: str | None = None, seed: int = 0) -> None:
        if config.transcribe_task not in prompts.tasks:
            raise ConfigError(f"mtbi.transcribe_task {config.transcribe_task!r} is not in {prompts.path}")
        self.transcribe_wordings = [w.text for w in prompts.tasks[config.transcribe_task].wordings if w.split == "train"]
        if not self.transcribe_wordings:
            raise ConfigError(f"{prompts.path}: task {config.transcribe_task!r} has no train wordings")
        if config.interleave_prob > 0 and (word_align is None or enc_lens is None or frame_shift <= 0):
            raise ConfigError("mtbi.interleave_prob > 0 needs the word alignment and an encoder with output_lengths")
        self.tokenizer, self.config, self.targets = tokenizer, config, targets
        self.word_align = word_align or {}
        self.enc_lens, self.frame_shift, self.min_frames = enc_lens, frame_shift, min_frames
        self.system, self.seed = system, int(seed)
        self.epoch = 1
        self.counts: Counter = Counter()  # kinds of examples drawn (in this process)

    def set_epoch(self, epoch: int) -> None:
        """The Trainer's epoch (1-based), for the interleaving ratio schedule."""
        self.epoch = epoch

    def _example(self, item: dict, rng: random.Random) -> tuple[str, str]:
        """(wording with {text}, response) for one utterance."""
        recs = self.targets.get(item["utt_id"])
        if not recs or rng.random() < self.config.transcribe_ratio:
            self.counts["transcribe"] += 1
            return rng.choice(self.transcribe_wordings), item["text"]
        rec = rng.choice(recs)
        self.counts[rec["task"]] += 1
        return rec["prompt"], rec["response"]

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise ValueError("MTBICollate: empty batch")
        feats, feats_lens = pad_sequences([it["feats"] for it in items], 0.0, torch.float32)
        enc_lens = self.enc_lens(feats_lens).tolist() if self.config.interleave_prob > 0 else None
        prompts, spans, responses, teachers = [], [], [], []
        for n, it in enumerate(items):
            rng = example_rng(self.seed, self.epoch, it["utt_id"])
            wording, response = self._example(it, rng)
            words = self.word_align.get(it["utt_id"])
            if words and rng.random() < self.config.interleave_prob:
                out = interleave(words, wording, self.config.interleave_config, rng, self.frame_shift,
                                 enc_lens[n], self.min_frames, self.epoch)
                user, utt_spans = out.user, out.audio_spans(n)
                self.counts["interleaved"] += 1
            else:
                user, utt_spans = wording.replace(PLACEHOLDER, AUDIO_PLACEHOLDER), [(n, 0, -1)]
            prompts.append(render_prompt_pieces(self.tokenizer, user, self.system, n_audio=len(utt_spans)))
            spans.append(utt_spans)
            responses.append(response_ids(self.tokenizer, user, response, self.system))
            if self.config.kl_weight > 0:
                text_user = wording.replace(PLACEHOLDER, it["text"])
                teachers.append(render_prompt_pieces(self.tokenizer, text_user, self.system, n_audio=0).text_ids[0])
        batch = {"utt_ids": [it["utt_id"] for it in items], "feats": feats, "feats_lens": feats_lens,
                 "prompts": prompts, "audio_spans": spans, "response_ids": responses,
                 "transcript_ids": [transcript_ids(self.tokenizer, it["text"]) for it in items]}
        if teachers:
            batch["teacher_prompt_ids"] = teachers
        return batch


def build_collate(config: dict, tokenizer: Any, model: Any) -> MTBICollate:
    """The training collate of a resolved training config (Trainer defaults included) with an
    ``mtbi:`` block, for ``model`` (a SpeechLLM)."""
    from speechllm.mtbi.interleave import min_span_frames

    mtbi = MTBIConfig.from_dict(config["mtbi"])
    prompt_file = (config.get("prompts") or {}).get("file")
    if not prompt_file:
        raise ConfigError("mtbi: needs prompts.file (the prompt set the targets were made with)")
    prompts = load_prompt_set(prompt_file)
    targets = load_imitation_targets(mtbi.targets, prompts, mtbi.tasks) if mtbi.transcribe_ratio < 1.0 else {}
    word_align, enc_lens, frame_shift, min_frames = None, None, 0.0, 1
    if mtbi.interleave_prob > 0:
        if not hasattr(model.encoder, "output_lengths"):
            raise ConfigError(f"mtbi.interleave_prob > 0: encoder {type(model.encoder).__name__} cannot give its "
                              "output lengths (output_lengths) to place speech spans")
        word_align = read_ctm(mtbi.word_align)
        enc_lens, frame_shift = model.encoder.output_lengths, 1.0 / model.encoder.frame_rate()
        min_frames = min_span_frames(model.projector)
        logger.info("interleaving: %d aligned utterances in %s; %.0f%% of examples, %s", len(word_align),
                    mtbi.word_align, 100 * mtbi.interleave_prob, mtbi.interleave_config)
    return MTBICollate(tokenizer, mtbi, prompts, targets, word_align, enc_lens, frame_shift, min_frames,
                       config.get("system_prompt"), seed=int(config["seed"]))
