"""Word times by CTC forced alignment, and the Kaldi CTM files that hold them.

The CTC head of a trained ASR model (:class:`~speechllm.models.ctc_attention.CTCAttentionModel`)
gives frame log-posteriors ``[T, V]`` over the tokens of ``tokens.txt``. Viterbi forced alignment
(``torchaudio.functional.forced_align``) finds the best CTC path that spells the transcript's
tokens; ``merge_tokens`` turns the path into one frame span ``[start, end)`` per token.

Words: the transcript is encoded by the model's sentencepiece tokenizer exactly as in ASR training
(the data dir's ``text``, already normalized by the recipe); a piece starting with ``▁`` starts a
word, so the token groups are the whitespace-separated words of ``text``. A word starts at the
first frame of its first token and ends where the next word starts; the last word ends one frame
after its last token frame. Words are therefore in transcript order, never overlap and together
cover ``[first token frame, last token frame + 1)``; leading and trailing silence lie outside.
Blank frames between words belong to the word before them (CTC emits a token on one or two frames,
usually near the start of its sound, so a word's own blank frames follow it).

Times are ``frame * frame_shift`` seconds with ``frame_shift = 1 / encoder.frame_rate()`` (60 ms for
the mini_synth Conformer with subsampling 6; no correction for the receptive field's offset, so
times can be late by up to about one frame). A consumer at another frame rate converts the seconds
back with its own shift (:mod:`speechllm.mtbi.interleave`).

An utterance that cannot be aligned raises :class:`AlignmentError` with a short ``reason``
(``empty_text``, ``no_frames``, ``too_few_frames``, ``tokenization``): CTC needs
``T >= U + repeats`` encoder frames for ``U`` tokens, since a repeated token needs a blank between
its two copies.

CTM (``utt channel start duration word``, one word a line, sorted by utterance, words in order)::

    spk1-utt1 1 0.12 0.3 in
    spk1-utt1 1 0.42 0.18 the
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torchaudio.functional import forced_align, merge_tokens

from speechllm.data.datadir import DataDirError, format_seconds, iter_lines
from speechllm.utils.config import ConfigError, atomic_write_text

WORD_START = "\u2581"  # sentencepiece's "▁": the piece begins a new word
TIME_TOLERANCE = 1e-6  # seconds; CTM times are rounded to 4 decimals, start + duration is not exact


class WordTime(NamedTuple):
    """One aligned word: ``[start, end)`` in seconds from the start of the utterance."""

    word: str
    start: float
    end: float


class AlignmentError(ValueError):
    """An utterance that cannot be aligned; ``reason`` is a short key for counting failures."""

    def __init__(self, reason: str, what: str) -> None:
        self.reason = reason
        super().__init__(what)


def word_token_ids(tokenizer: Any, text: str) -> list[list[int]]:
    """Token ids of each whitespace-separated word of ``text``: ``tokenizer.encode(text)`` cut before
    every piece that starts with ``▁`` (``tokenizer``: :class:`speechllm.text.tokenizer.Tokenizer`)."""
    groups: list[list[int]] = []
    for piece, token in zip(tokenizer.pieces(text), tokenizer.encode(text)):
        if piece.startswith(WORD_START) or not groups:
            groups.append([])
        groups[-1].append(token)
    if len(groups) != len(text.split()):
        raise AlignmentError("tokenization", f"the tokenizer splits {len(text.split())} words into {len(groups)} "
                                             f"word-start groups: {tokenizer.pieces(text)}")
    return groups


def min_ctc_frames(token_ids: Sequence[int]) -> int:
    """Fewest frames a CTC path spelling ``token_ids`` needs: one per token, one blank per repeat."""
    return len(token_ids) + sum(a == b for a, b in zip(token_ids, token_ids[1:]))


def token_frame_spans(log_probs: torch.Tensor, token_ids: Sequence[int], blank: int = 0) -> list[tuple[int, int]]:
    """Frame span ``[start, end)`` of each token on the best CTC path of ``log_probs[T, V]``."""
    needed, frames = min_ctc_frames(token_ids), int(log_probs.size(0))
    if frames < needed:
        raise AlignmentError("too_few_frames", f"{frames} encoder frames for {len(token_ids)} tokens with "
                                               f"{needed - len(token_ids)} repeats: CTC needs at least {needed}")
    targets = torch.tensor([list(token_ids)], dtype=torch.int32, device=log_probs.device)
    labels, scores = forced_align(log_probs.float().unsqueeze(0), targets, blank=blank)
    spans = merge_tokens(labels[0], scores[0].exp(), blank=blank)
    return [(s.start, s.end) for s in spans]


def word_frame_spans(token_spans: Sequence[tuple[int, int]], tokens_per_word: Sequence[int]) -> list[tuple[int, int]]:
    """Frame span of each word: from its first token's start to the next word's start (the last word:
    to its last token's end), for ``token_spans`` in order and words of ``tokens_per_word`` tokens."""
    if sum(tokens_per_word) != len(token_spans) or min(tokens_per_word, default=1) < 1:
        raise ValueError(f"{len(token_spans)} token spans for words of {list(tokens_per_word)} tokens")
    firsts = [sum(tokens_per_word[:i]) for i in range(len(tokens_per_word))]
    starts = [token_spans[i][0] for i in firsts]
    return list(zip(starts, starts[1:] + [token_spans[-1][1]]))


def align_words(log_probs: torch.Tensor, words: Sequence[str], word_tokens: Sequence[Sequence[int]],
                frame_shift: float, blank: int = 0) -> list[WordTime]:
    """Times of ``words`` (token ids ``word_tokens``, one list per word) on ``log_probs[T, V]``, the CTC
    log-posteriors of one utterance's ``T`` valid encoder frames, ``frame_shift`` seconds apart."""
    if not words:
        raise AlignmentError("empty_text", "empty transcript: nothing to align")
    if len(words) != len(word_tokens):
        raise ValueError(f"{len(words)} words but {len(word_tokens)} token groups")
    if log_probs.size(0) == 0:
        raise AlignmentError("no_frames", "no encoder frames (the utterance is shorter than the subsampling window)")
    flat = [t for group in word_tokens for t in group]
    spans = word_frame_spans(token_frame_spans(log_probs, flat, blank), [len(g) for g in word_tokens])
    return [WordTime(w, s * frame_shift, e * frame_shift) for w, (s, e) in zip(words, spans)]


class CTCAligner:
    """Word times from the CTC head of a trained :class:`CTCAttentionModel` (in eval mode).

    ``align_batch(x, x_lens, texts)`` encodes a padded batch (features ``[B, T, D]`` or waveforms
    ``[B, S]``, as the model was trained) and aligns each utterance on its own (``forced_align``
    takes one utterance at a time); each result is a list of :class:`WordTime` or the
    :class:`AlignmentError` saying why there is none.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        if getattr(model, "ctc", None) is None:
            raise ConfigError("aligner ctc: the ASR model has no CTC head (trained with ctc_weight 0)")
        self.model, self.tokenizer = model, tokenizer
        self.frame_shift = 1.0 / float(model.encoder.frame_rate())

    @torch.no_grad()
    def align_batch(self, x: torch.Tensor, x_lens: torch.Tensor,
                    texts: Sequence[str]) -> list[list[WordTime] | AlignmentError]:
        enc, enc_lens = self.model.encode(x, x_lens)
        log_probs = self.model.ctc.log_softmax(enc)
        out: list[list[WordTime] | AlignmentError] = []
        for b, text in enumerate(texts):
            try:
                out.append(align_words(log_probs[b, :int(enc_lens[b])], text.split(),
                                       word_token_ids(self.tokenizer, text), self.frame_shift, self.model.blank))
            except AlignmentError as e:
                out.append(e)
        return out


# Aligners by name (``--aligner``): built as ``ALIGNERS[name](model, tokenizer)``.
ALIGNERS: dict[str, type] = {"ctc": CTCAligner}


# ----------------------------------------------------------------------------------------
# CTM files
# ----------------------------------------------------------------------------------------
def write_ctm(path: str | os.PathLike, alignments: Mapping[str, Sequence[WordTime]]) -> None:
    """Write ``utt 1 start duration word`` lines, utterances sorted by id, words in order."""
    lines = [f"{utt} 1 {format_seconds(w.start)} {format_seconds(w.end - w.start)} {w.word}\n"
             for utt in sorted(alignments) for w in alignments[utt]]
    atomic_write_text(path, "".join(lines))


def _parse_ctm_line(line: str) -> tuple[str, WordTime]:
    fields = line.split()
    if len(fields) not in (5, 6):  # a sixth field is a confidence, ignored
        raise ValueError(f"expected 5 fields (utt channel start duration word), got {len(fields)}")
    try:
        start, dur = float(fields[2]), float(fields[3])
    except ValueError:
        raise ValueError(f"start/duration are not numbers: '{fields[2]}' '{fields[3]}'") from None
    if not (start >= 0 and dur >= 0):  # also rejects NaN
        raise ValueError(f"negative or NaN start/duration: {fields[2]} {fields[3]}")
    return fields[0], WordTime(fields[4], start, start + dur)


def read_ctm(path: str | os.PathLike) -> dict[str, list[WordTime]]:
    """``{utt: [WordTime, ...]}`` from a CTM file; a malformed line, or a word that starts before
    the previous word of its utterance ends, raises :class:`DataDirError` naming ``file:line``."""
    out: dict[str, list[WordTime]] = {}
    for lineno, line in iter_lines(Path(path)):
        if not line.strip():
            raise DataDirError(path, lineno, "empty line")
        try:
            utt, word = _parse_ctm_line(line)
        except ValueError as e:
            raise DataDirError(path, lineno, str(e)) from None
        words = out.setdefault(utt, [])
        if words and word.start < words[-1].end - TIME_TOLERANCE:
            raise DataDirError(path, lineno, f"'{utt}': word '{word.word}' starts at {word.start} before the "
                                             f"previous word '{words[-1].word}' ends ({words[-1].end:.4f})")
        words.append(word)
    return out
