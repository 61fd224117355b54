"""normalize_text: the one normalizer for transcripts and scoring."""
import pytest

from speechllm.text.normalizer import normalize_text


@pytest.mark.parametrize("raw, expected", [
    ("The LORD is my shepherd; I shall not want.", "the lord is my shepherd i shall not want"),
    ("Hello,   World!\n\tAgain?", "hello world again"),
    ("“Quoted” text — with a dash…", "quoted text with a dash"),
    ("(parentheses) [brackets] {braces} <angles>", "parentheses brackets braces angles"),
    ("", ""),
    ("  ...  !!  ", ""),
])
def test_lowercases_and_turns_punctuation_into_spaces(raw, expected):
    assert normalize_text(raw) == expected


def test_keeps_word_internal_apostrophes_and_maps_curly_ones():
    assert normalize_text("Don’t stop; the LORD'S house, o'er") == "don't stop the lord's house o'er"


def test_drops_leading_and_trailing_apostrophes():
    assert normalize_text("'Tis the fathers' 'word'") == "tis the fathers word"


def test_hyphens_between_letters_become_spaces():
    assert normalize_text("well-known Beth-el self‐made") == "well known beth el self made"


def test_digits_are_kept_as_written():
    assert normalize_text("In 1611, 3.5 kg at 10:30 cost $1,000.") == "in 1611 3.5 kg at 10:30 cost 1,000"
    assert normalize_text("42") == "42"  # no number expansion


def test_nfkc_folds_compatibility_forms():
    assert normalize_text("ＡＢＣ ﬁne Ⅻ") == "abc fine xii"


def test_keeps_non_ascii_letters():
    assert normalize_text("Café Straße ÉCOLE") == "café straße école"


def test_is_idempotent():
    for s in ["The LORD’S “house”, well-known!", "It's 10:30 -- 'tis time.", "ＡＢＣ—ﬁ"]:
        once = normalize_text(s)
        assert normalize_text(once) == once
