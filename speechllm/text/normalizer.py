"""The one text normalizer: applied to references and hypotheses before scoring, and to the
transcripts of every corpus the recipes prepare, so that both sides are always comparable.

``normalize_text(s)`` does, in this order:

1. Unicode NFKC (compatibility forms folded: full-width letters, ligatures, ``…`` -> ``...``).
2. Curly and modifier quotes to straight ones: ``‘ ’ ‚ ‛ ʼ ′ ` ´`` -> ``'`` and
   ``“ ” „ ‟ ″`` -> ``"``.
3. Lowercase (``str.lower``; no accent stripping, ``é`` stays ``é``).
4. Punctuation and symbols (Unicode categories ``P*`` and ``S*``) -> space, except
   - an apostrophe between two letters/digits (``don't``, ``lord's``, ``90's`` are kept;
     a leading or trailing one is removed: ``'tis`` -> ``tis``, ``fathers'`` -> ``fathers``);
   - ``.``, ``,`` and ``:`` between two digits, so numbers stay one token as written
     (``3.5``, ``1,000``, ``10:30``).
   Hyphens are punctuation, so ``well-known`` -> ``well known`` and ``beth-el`` -> ``beth el``.
5. Control and format characters -> space; whitespace collapsed to single spaces, stripped.

Digits are kept as written: no number expansion (``42`` does not become ``forty two``), so a
system that writes numbers as words and a reference that uses digits differ, visibly.
"""
from __future__ import annotations

import unicodedata

# Quote-like characters that mean an apostrophe or a double quote in running text.
_QUOTE_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u02bc": "'",
    "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
})
# Separators kept between digits so that "3.5" and "1,000" stay single tokens.
_DIGIT_SEPARATORS = ".,:"


def _is_word_char(c: str) -> bool:
    return c.isalnum()


def normalize_text(s: str) -> str:
    """Normalize ``s`` for scoring and training transcripts (rules in the module docstring).

    >>> normalize_text("The LORD’S house, well-known; “Amen.”")
    "the lord's house well known amen"
    >>> normalize_text("It costs $3.50 -- 'tis 10:30!")
    'it costs 3.50 tis 10:30'
    """
    s = unicodedata.normalize("NFKC", s).translate(_QUOTE_MAP).lower()
    out: list[str] = []
    n = len(s)
    for i, c in enumerate(s):
        prev_c = s[i - 1] if i > 0 else ""
        next_c = s[i + 1] if i + 1 < n else ""
        if c == "'" and _is_word_char(prev_c) and _is_word_char(next_c):
            out.append(c)
        elif c in _DIGIT_SEPARATORS and prev_c.isdigit() and next_c.isdigit():
            out.append(c)
        elif c.isspace():
            out.append(" ")
        else:
            cat = unicodedata.category(c)
            # P*: punctuation, S*: symbols, C*: control/format/unassigned -> word boundary
            out.append(" " if cat[0] in "PSC" else c)
    return " ".join("".join(out).split())
