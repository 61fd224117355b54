"""Lexicon-constrained search: hypotheses may only spell words of a word list.

With subword tokens a search can spell non-words ("baptest", "knowledgreather"); a closed
word list (as a Kaldi lexicon restricts a WFST decoder) forbids them. :class:`LexiconConstraint`
follows, per hypothesis, the word being spelled (the text since the last word boundary) and
gives every token the score 0 (it keeps the text a prefix of a listed word, or starts a new
word after a complete one) or ``-inf``; ``<eos>`` is allowed only after a complete word.

Tokens are sentencepiece pieces, where ``▁`` starts a word. Special tokens (``<blank>``,
``<unk>``, ``<sos/eos>``) are never text; ``<unk>`` is therefore never allowed.

States are plain strings: ``""`` before the first word, else ``"▁"`` + the word so far. The
allowed-token mask and the next state of each (state, token) are cached, so a search pays for
each distinct partial word once.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch

from speechllm.data.datadir import DataDirError, iter_lines

WORD_START = "\u2581"  # sentencepiece's word-boundary mark
NEG_INF = float("-inf")
START = ""  # the state before any word


def read_word_list(path: str | os.PathLike) -> list[str]:
    """Words of a word list or Kaldi lexicon: the first field of each non-empty line.

    Errors (:class:`DataDirError`) name the file, and the line where there is one: a missing
    file, bad UTF-8, a word holding the word-boundary mark, no word at all.
    """
    words = []
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if WORD_START in fields[0]:
            raise DataDirError(path, lineno, f"word {fields[0]!r} contains the word-boundary mark {WORD_START!r}")
        words.append(fields[0])
    if not words:
        raise DataDirError(path, None, "no words in the lexicon")
    return words


class LexiconConstraint:
    """Allowed next tokens of partial hypotheses under a word list (see the module docstring).

    Args:
        token_list: the model's tokens by id (``tokens.txt``); entries starting with ``<`` and
            ending with ``>`` are special tokens.
        words: the word list (normalized like the token text).
        eos: id of ``<sos/eos>``.
    """

    def __init__(self, token_list: Sequence[str], words: Iterable[str], eos: int) -> None:
        self.pieces = [None if (t.startswith("<") and t.endswith(">")) else t for t in token_list]
        self.eos = eos
        self.words = {WORD_START + w for w in words}
        if not self.words:
            raise ValueError("empty word list")
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}
        self._mask: dict[str, torch.Tensor] = {}
        self._next: dict[tuple[str, int], str | None] = {}

    def advance(self, state: str, token: int) -> str | None:
        """State after ``token``; None when the token leaves the word list."""
        key = (state, token)
        if key not in self._next:
            self._next[key] = self._advance(state, token)
        return self._next[key]

    def _advance(self, state: str, token: int) -> str | None:
        piece = self.pieces[token]
        if not piece:
            return None
        if not piece.startswith(WORD_START) and state == START:
            return None  # text before the first word boundary
        text = state + piece
        # Every word but the last one in text must be complete; the last must be a prefix.
        cut = text.rfind(WORD_START)
        done, current = text[:cut], text[cut:]
        for word in done.split(WORD_START)[1:]:
            if WORD_START + word not in self.words:
                return None
        return current if current in self.prefixes else None

    def end_allowed(self, state: str) -> bool:
        """Whether a hypothesis in ``state`` may end (its last word is complete, or it is empty)."""
        return state == START or state in self.words

    def mask(self, state: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[V]`` float scores: 0 for the tokens allowed after ``state`` (``<eos>`` included), else -inf."""
        if state not in self._mask:
            m = torch.full((len(self.pieces),), NEG_INF)
            for token in range(len(self.pieces)):
                if self.advance(state, token) is not None:
                    m[token] = 0.0
            if self.end_allowed(state):
                m[self.eos] = 0.0
            self._mask[state] = m
        return self._mask[state].to(device)

    def masks(self, states: Sequence[str | None], device: torch.device | str = "cpu") -> torch.Tensor:
        """``[N, V]``: :meth:`mask` per state; a None state (a dead hypothesis) allows nothing."""
        rows = [self.mask(s) if s is not None else torch.full((len(self.pieces),), NEG_INF) for s in states]
        return torch.stack(rows).to(device)
