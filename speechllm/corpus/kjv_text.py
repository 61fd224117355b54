"""King James Version verses from Debian's ``bible-kjv`` package, and a seeded selection of
disjoint train/dev/test verses.

``bible -f Gen1:1-Rev22:21`` (formatting off) prints one verse per line, ``Ps23:1 The LORD
is my shepherd; I shall not want.``; :func:`dump_kjv` parses that into :class:`Verse` objects
(31,102 verses). Book names are the program's own abbreviations (``Ge``, ``Psa``, ``Prv``,
``Eccl``, ``Mat``, ``Mark``, ``Luke``, ``John``, ...).

Selection (:func:`select_verses`): keep verses of the chosen books with ``min_words`` to
``max_words`` words after normalization, shuffle with the seed, take the training verses
first, then test and dev verses from the rest. With ``closed_vocab`` (the default), test and
dev verses whose every word occurs in the training transcripts are taken first, as in the
WSJ 5k closed-vocabulary task: the test then measures unseen *voices*, not the spelling of
words that a couple of hours of training text never contained. The number of test words not
in the training text is reported either way.

Withheld verses (:func:`read_exclusions`): the verses of speech dev/test sets, named by the
verse at the end of their utterance ids or by an identical transcript, so that text-only
training data (the sllm1 LLM's, the asr1 external LM's) can leave them out.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

from speechllm.text.normalizer import normalize_text

log = logging.getLogger(__name__)

WHOLE_BIBLE = "Gen1:1-Rev22:21"
# Psalms, Proverbs, Ecclesiastes (wisdom/poetry: short verses, few proper names) and the four
# Gospels (narrative, everyday words). About 3,900 verses of 5-18 words, ~3,800 word types.
DEFAULT_BOOKS: tuple[str, ...] = ("Psa", "Prv", "Eccl", "Mat", "Mark", "Luke", "John")
_LINE_RE = re.compile(r"^(?P<book>\d?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+)\s+(?P<text>.+)$")
# The verse at the end of an utterance id: <voice>-John001_037 (speed perturbation or a repeat
# suffix _r1 around it are allowed).
_UTT_VERSE_RE = re.compile(r"(?:^|-)(?P<book>\d?[A-Za-z]+)(?P<chapter>\d{3,})_(?P<verse>\d{3,})(?:_r\d+)?$")


@dataclass(frozen=True)
class Verse:
    """One verse: ``ref`` as printed by ``bible`` (``Psa23:1``), its parts and its text."""

    ref: str
    book: str
    chapter: int
    verse: int
    text: str

    @cached_property  # normalized once: whole-Bible passes (exclusions, LM text) read it repeatedly
    def transcript(self) -> str:
        """The normalized transcript (lowercase, no punctuation): what the data dir's text holds."""
        return normalize_text(self.text)

    @property
    def words(self) -> list[str]:
        return self.transcript.split()

    @property
    def id_part(self) -> str:
        """A filesystem/utterance-id safe form of the reference: ``Psa023_001``."""
        return f"{self.book}{self.chapter:03d}_{self.verse:03d}"


def parse_bible_output(lines: Iterable[str]) -> list[Verse]:
    """Parse unformatted ``bible -f`` output (one ``RefC:V text`` line per verse)."""
    verses = []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        m = _LINE_RE.match(line)
        if m is None:
            raise ValueError(f"bible output line {lineno}: cannot parse '{line[:60]}'")
        verses.append(Verse(
            ref=f"{m['book']}{m['chapter']}:{m['verse']}", book=m["book"],
            chapter=int(m["chapter"]), verse=int(m["verse"]), text=m["text"].strip(),
        ))
    return verses


def dump_kjv(span: str = WHOLE_BIBLE, bible_cmd: str = "bible") -> list[Verse]:
    """Run ``bible -f <span>`` and return its verses (the whole KJV by default).

    Raises:
        FileNotFoundError: ``bible`` is not installed (Debian package ``bible-kjv``).
    """
    if shutil.which(bible_cmd) is None:
        raise FileNotFoundError(f"'{bible_cmd}' not found: install the Debian package bible-kjv")
    proc = subprocess.run([bible_cmd, "-f", span], capture_output=True, text=True, check=True)
    return parse_bible_output(proc.stdout.splitlines())


def filter_verses(verses: Iterable[Verse], books: Sequence[str] | None,
                  min_words: int, max_words: int) -> list[Verse]:
    """Verses of ``books`` (all when ``None``) with ``min_words..max_words`` normalized words."""
    wanted = set(books) if books else None
    return [v for v in verses
            if (wanted is None or v.book in wanted) and min_words <= len(v.words) <= max_words]


def oov_words(verses: Iterable[Verse], vocab: set[str]) -> tuple[int, int]:
    """``(words not in vocab, all words)`` over ``verses``."""
    oov = total = 0
    for v in verses:
        for w in v.words:
            total += 1
            oov += w not in vocab
    return oov, total


def select_verses(pool: Sequence[Verse], num_train: int, num_dev: int, num_test: int, seed: int,
                  closed_vocab: bool = True) -> tuple[dict[str, list[Verse]], dict]:
    """Split ``pool`` into disjoint train/dev/test verse lists, deterministic for ``seed``.

    Train gets ``min(num_train, len(pool) - num_dev - num_test)`` distinct verses (the caller
    may reuse them for more utterances). Test, then dev, are drawn from the remaining verses,
    closed-vocabulary ones first when ``closed_vocab``.

    Returns:
        ``({"train": [...], "dev": [...], "test": [...]}, stats)``; ``stats`` has the pool
        size, vocabulary size and OOV counts of dev and test against the training text.

    Raises:
        ValueError: the pool cannot give ``num_dev + num_test`` held-out verses.
    """
    if num_dev + num_test >= len(pool):
        raise ValueError(f"pool of {len(pool)} verses too small for {num_dev} dev + {num_test} test verses")
    order = sorted(pool, key=lambda v: (v.book, v.chapter, v.verse))  # independent of input order
    random.Random(seed).shuffle(order)
    n_train = max(1, min(num_train, len(order) - num_dev - num_test))
    train, rest = order[:n_train], order[n_train:]
    vocab = {w for v in train for w in v.words}
    if closed_vocab:
        covered = [v for v in rest if all(w in vocab for w in v.words)]
        rest = covered + [v for v in rest if not all(w in vocab for w in v.words)]
    test, dev = rest[:num_test], rest[num_test:num_test + num_dev]
    stats = {
        "pool_verses": len(pool),
        "train_verses": len(train),
        "train_vocab_size": len(vocab),
        "closed_vocab": closed_vocab,
        "closed_vocab_candidates": sum(all(w in vocab for w in v.words) for v in order[n_train:]),
    }
    for name, part in (("dev", dev), ("test", test)):
        oov, total = oov_words(part, vocab)
        stats[f"{name}_words"] = total
        stats[f"{name}_oov_words"] = oov
    return {"train": train, "dev": dev, "test": test}, stats


def read_exclusions(paths: Iterable[str | os.PathLike], verses: list[Verse]) -> tuple[set[str], dict]:
    """``id_part``s of the verses named (by utterance id or identical transcript) in Kaldi ``text``
    files, and counts for the log (``lines``, ``matched``, ``unmatched``, ``id_text_mismatch``)."""
    by_id = {v.id_part: v for v in verses}
    by_text: dict[str, list[str]] = {}
    for v in verses:
        by_text.setdefault(v.transcript, []).append(v.id_part)
    withheld: set[str] = set()
    stats = Counter()
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: exclusion file not found")
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.strip().split(maxsplit=1)
                if not parts:
                    continue
                utt, text = parts[0], normalize_text(parts[1]) if len(parts) > 1 else ""
                stats["lines"] += 1
                found = False
                m = _UTT_VERSE_RE.search(utt)
                if m:
                    key = f"{m['book']}{int(m['chapter']):03d}_{int(m['verse']):03d}"
                    if key in by_id:
                        withheld.add(key)
                        found = True
                        if text and by_id[key].transcript != text:
                            stats["id_text_mismatch"] += 1
                            log.warning("%s:%d: %s: transcript differs from verse %s; withholding both",
                                        path, lineno, utt, by_id[key].ref)
                for key in by_text.get(text, []):
                    withheld.add(key)
                    found = True
                stats["matched" if found else "unmatched"] += 1
    return withheld, dict(stats)
