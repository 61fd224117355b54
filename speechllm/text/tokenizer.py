"""Sentencepiece tokenizers (bpe, unigram, char) and the token list that defines our ids.

The token list file ``tokens.txt`` (one token per line, line number = id) is the source of
truth for model outputs::

    0            <blank>      CTC blank
    1            <unk>        sentencepiece's unknown piece (its id 0)
    2 .. V-2     pieces       sentencepiece ids 1 .. V-3, in sentencepiece order
    V-1          <sos/eos>    start/end of sentence for the attention decoder

so ``our_id = sentencepiece_id + 1``. Sentencepiece is trained with ``<unk>`` as id 0 and
no bos/eos/pad pieces, and :class:`Tokenizer` checks at load time that ``tokens.txt``
matches the model piece by piece, so a token list from another model cannot slip in.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from speechllm.data.datadir import read_text
from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
MODEL_TYPES = ("bpe", "unigram", "char")


def read_token_list(path: str | os.PathLike) -> list[str]:
    """Tokens by id from ``tokens.txt`` (one per line)."""
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    if not tokens:
        raise ValueError(f"{path}: empty token list")
    return tokens


def write_token_list(path: str | os.PathLike, tokens: Sequence[str]) -> None:
    """Write ``tokens`` one per line (line number = id)."""
    atomic_write_text(path, "".join(t + "\n" for t in tokens))


def _write_training_text(input_path: Path, kaldi_text: bool, dst: Path) -> int:
    """Copy transcripts (utt-id column removed for a Kaldi ``text``) to ``dst``; returns line count."""
    if kaldi_text:
        lines = [t for t in read_text(input_path).values() if t]
    else:
        with input_path.open(encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise ValueError(f"{input_path}: no text to train a tokenizer on")
    dst.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def train_tokenizer(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_type: str = "bpe",
    vocab_size: int | None = 500,
    kaldi_text: bool = False,
    user_defined_symbols: Iterable[str] = (),
    character_coverage: float = 1.0,
    num_threads: int = 1,
) -> tuple[Path, Path]:
    """Train a sentencepiece model and write ``tokenizer.model`` and ``tokens.txt`` to ``out_dir``.

    Args:
        input_path: plain text (one sentence per line) or, with ``kaldi_text``, a Kaldi
            ``text`` file whose first column (the utterance id) is dropped.
        model_type: ``bpe``, ``unigram`` or ``char``.
        vocab_size: sentencepiece vocabulary size (``--nbpe``; includes ``<unk>``), so the
            token list has ``vocab_size + 2`` entries. Exact for bpe/unigram (an error if the
            text is too small for it); for char ``None`` means every character seen.
        user_defined_symbols: pieces never split (none by default).
        character_coverage: 1.0 keeps every character (right for small alphabets).

    Returns:
        ``(model_path, token_list_path)``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got '{model_type}'")
    if vocab_size is None and model_type != "char":
        raise ValueError(f"{model_type} needs a vocab_size")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "tokenizer"
    options = dict(
        model_type=model_type,
        # char: a soft limit, so that "every character" needs no counting beforehand
        vocab_size=vocab_size if vocab_size is not None else 1 << 20,
        hard_vocab_limit=model_type != "char",
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,  # our <blank>/<sos/eos> live outside spm
        character_coverage=character_coverage,
        # transcripts are normalised before this (text/normalizer.py); spm must not change them
        normalization_rule_name="identity",
        input_sentence_size=10_000_000, shuffle_input_sentence=True,
        num_threads=num_threads, minloglevel=2,
    )
    symbols = list(user_defined_symbols)
    if symbols:
        options["user_defined_symbols"] = ",".join(symbols)
    with tempfile.TemporaryDirectory(prefix="spm_train.") as tmp:
        train_txt = Path(tmp) / "train.txt"
        n = _write_training_text(Path(input_path), kaldi_text, train_txt)
        try:
            spm.SentencePieceTrainer.train(input=str(train_txt), model_prefix=str(prefix), **options)
        except RuntimeError as e:
            raise ValueError(f"sentencepiece training on {input_path} failed: {e}") from None
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    token_list = out_dir / "tokens.txt"
    write_token_list(token_list, [BLANK] + pieces + [SOS_EOS])
    logger.info(
        "trained %s tokenizer on %s lines of %s: %d pieces, %d tokens in %s",
        model_type, f"{n:,}", input_path, len(pieces), len(pieces) + 2, token_list,
    )
    return Path(str(prefix) + ".model"), token_list


class Tokenizer:
    """Text <-> token ids in the ``tokens.txt`` numbering (see module docstring)."""

    def __init__(self, model_path: str | os.PathLike, token_list_path: str | os.PathLike):
        self.model_path = str(model_path)
        self.token_list_path = str(token_list_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_path)
        self.token_list = read_token_list(token_list_path)
        self._check_token_list()
        self.blank_id = 0
        self.unk_id = 1
        self.sos_eos_id = len(self.token_list) - 1

    def _check_token_list(self) -> None:
        n = self.sp.get_piece_size()
        expected = [BLANK] + [self.sp.id_to_piece(i) for i in range(n)] + [SOS_EOS]
        if self.token_list == expected:
            return
        if len(self.token_list) != len(expected):
            raise ValueError(
                f"{self.token_list_path}: {len(self.token_list)} tokens, but {self.model_path} "
                f"needs {len(expected)} (<blank> + {n} pieces + <sos/eos>)"
            )
        line = next(i for i, (a, b) in enumerate(zip(self.token_list, expected)) if a != b)
        raise ValueError(
            f"{self.token_list_path}:{line + 1}: token '{self.token_list[line]}' does not match "
            f"'{expected[line]}' of {self.model_path}"
        )

    @property
    def vocab_size(self) -> int:
        """Number of output tokens, ``<blank>`` and ``<sos/eos>`` included."""
        return len(self.token_list)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown characters map to ``<unk>`` = 1)."""
        return [i + 1 for i in self.sp.encode(text)]

    def pieces(self, text: str) -> list[str]:
        """Sentencepiece pieces of ``text`` (for inspection)."""
        return self.sp.encode(text, out_type=str)

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ``<blank>`` and ``<sos/eos>`` are skipped (they are not text)."""
        ids = self._check_ids(ids)
        return self.sp.decode([i - 1 for i in ids if i not in (self.blank_id, self.sos_eos_id)])

    def ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids`` (special tokens included)."""
        return [self.token_list[i] for i in self._check_ids(ids)]
