"""Text tasks on a sentence, exact-match scoring, and the prompt file (loading, splits, errors)."""
from pathlib import Path

import pytest

from speechllm.llm.text_tasks import (BOOK_NAMES, TEXT_TASKS, TaskContext, TaskUnavailable, exact_match,
                                      load_prompt_set)
from speechllm.utils.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "egs" / "mini_synth" / "sllm1" / "conf" / "prompts" / "mini_tasks.yaml"

VERSE = "The LORD is my shepherd; I shall not want."
TRANSCRIPT = "the lord is my shepherd i shall not want"
CONTEXT = TaskContext(book="Psalms", next_text="He maketh me to lie down in green pastures:")


# --- tasks ------------------------------------------------------------------------------
@pytest.mark.parametrize("task, answer", [
    ("repeat", TRANSCRIPT),
    ("continue", "he maketh me to lie down in green pastures"),
    ("count_words", "9"),
    ("first_word", "the"),
    ("last_word", "want"),
    ("uppercase", "THE LORD IS MY SHEPHERD I SHALL NOT WANT"),
    ("source_book", "Psalms"),
    ("keyword", "shepherd"),
])
def test_each_task_answers_the_shepherd_verse(task, answer):
    assert TEXT_TASKS[task](TRANSCRIPT, CONTEXT) == answer


def test_raw_verse_and_its_transcript_give_the_same_answers():
    for name, task in TEXT_TASKS.items():
        assert task(VERSE, CONTEXT) == task(TRANSCRIPT, CONTEXT), name


def test_apostrophe_words_and_uppercase():
    s = "for his name's sake"
    assert TEXT_TASKS["count_words"](s, CONTEXT) == "4"
    assert TEXT_TASKS["uppercase"](s, CONTEXT) == "FOR HIS NAME'S SAKE"
    assert TEXT_TASKS["keyword"](s, CONTEXT) == "name's"  # 6 characters, the apostrophe counts


def test_keyword_ties_go_to_the_first_longest_word():
    assert TEXT_TASKS["keyword"]("i will lift up mine eyes", CONTEXT) == "will"
    assert TEXT_TASKS["keyword"]("my help cometh from the lord", CONTEXT) == "cometh"


def test_tasks_without_their_context_are_unavailable():
    with pytest.raises(TaskUnavailable):
        TEXT_TASKS["continue"](TRANSCRIPT, TaskContext(book="Psalms"))
    with pytest.raises(TaskUnavailable):
        TEXT_TASKS["source_book"](TRANSCRIPT, TaskContext(next_text="amen"))
    with pytest.raises(TaskUnavailable):
        TEXT_TASKS["first_word"]("  ;; ", CONTEXT)


def test_book_names_cover_the_corpus_books():
    for abbrev in ("Psa", "Prv", "Eccl", "Mat", "Mark", "Luke", "John", "Ge", "Rev"):
        assert abbrev in BOOK_NAMES
    assert BOOK_NAMES["Prv"] == "Proverbs" and len(BOOK_NAMES) == 66


# --- scoring ----------------------------------------------------------------------------
def test_exact_match_ignores_case_punctuation_and_spaces():
    assert exact_match("repeat", "  The LORD is my shepherd;  I shall not want. ", TRANSCRIPT)
    assert exact_match("source_book", "psalms", "Psalms")
    assert not exact_match("repeat", "the lord is my shepherd", TRANSCRIPT)


def test_exact_match_compares_integers_for_count_words():
    assert exact_match("count_words", "12", "12")
    assert exact_match("count_words", "12 words.", "12")
    assert exact_match("count_words", "012", "12")
    assert not exact_match("count_words", "13", "12")
    assert not exact_match("count_words", "twelve", "12")


def test_exact_match_is_case_sensitive_for_uppercase():
    assert exact_match("uppercase", "THE LORD'S HOUSE ", "THE LORD'S HOUSE")
    assert not exact_match("uppercase", "the lord's house", "THE LORD'S HOUSE")


# --- the recipe's prompt file -----------------------------------------------------------
@pytest.fixture(scope="module")
def prompts():
    return load_prompt_set(PROMPTS)


def test_every_text_task_has_at_least_five_wordings(prompts):
    assert set(TEXT_TASKS) <= set(prompts.tasks)
    for task in prompts.tasks.values():
        assert len(task.wordings) >= 5, task.name
        assert len({w.text for w in task.wordings}) == len(task.wordings)
        assert all(w.text.count("{text}") == 1 for w in task.wordings)


def test_transcribe_answers_like_repeat(prompts):
    t = prompts.tasks["transcribe"]
    assert t.answer == "repeat" and t.answer_for(VERSE, CONTEXT) == TRANSCRIPT
    assert any("Transcribe" in w.text for w in t.wordings)


def test_wording_ids_are_task_slash_id_and_unique(prompts):
    ids = [w.id for w in prompts.wordings()]
    assert len(ids) == len(set(ids))
    assert prompts.wording("repeat/1").render("amen") == "Repeat this sentence: amen"
    assert all(w.id.startswith(f"{w.task}/") for w in prompts.wordings())


def test_heldout_tasks_and_wordings(prompts):
    heldout_tasks = {t.name for t in prompts.tasks.values() if t.split == "heldout"}
    assert heldout_tasks == {"last_word", "keyword"}
    for task in prompts.tasks.values():
        held = [w for w in task.wordings if w.split == "heldout"]
        if task.name in heldout_tasks:
            assert len(held) == len(task.wordings)  # a held-out task holds out every wording
        else:
            assert 1 <= len(held) <= 2, task.name
    assert set(prompts.wordings("train")) | set(prompts.wordings("heldout")) == set(prompts.wordings())


# --- prompt file errors -----------------------------------------------------------------
GOOD = """\
tasks:
  repeat:
    wordings:
      - {id: 1, text: "Repeat: {text}"}
      - {id: 2, text: "Again: {text}", split: heldout}
"""


def _load(tmp_path, text):
    path = tmp_path / "prompts.yaml"
    path.write_text(text, encoding="utf-8")
    return load_prompt_set(path), path


def test_minimal_prompt_file_loads_with_defaults(tmp_path):
    prompts, _ = _load(tmp_path, GOOD)
    t = prompts.tasks["repeat"]
    assert t.answer == "repeat" and t.split == "train"
    assert [(w.id, w.split, w.line) for w in t.wordings] == [("repeat/1", "train", 4), ("repeat/2", "heldout", 5)]


@pytest.mark.parametrize("bad, line, words", [
    (GOOD.replace("Repeat: {text}", "Repeat this"), 4, "{text} exactly once"),
    (GOOD.replace("Repeat: {text}", "{text} and {text}"), 4, "{text} exactly once"),
    (GOOD.replace("Repeat: {text}", "Repeat {word}: {text}"), 4, "braces"),
    (GOOD.replace("id: 2", "id: 1"), 5, "already used on line 4"),
    (GOOD.replace("split: heldout", "split: test"), 5, "split must be one of"),
    (GOOD.replace("  repeat:\n", "  repeat:\n    answer: reverse\n"), 2, "not a text task"),
    (GOOD.replace("  repeat:\n", "  repeat:\n    splits: train\n"), 2, "unknown key(s) ['splits']"),
    (GOOD.replace("{id: 1, ", "{ident: 1, "), 4, "unknown key(s) ['ident']"),
    (GOOD + "      - oops\n", 6, "must be a mapping"),
    (GOOD.replace('"Repeat: {text}"}', '"Repeat: {text}"'), 5, "invalid YAML"),  # where the parser sees it
])
def test_prompt_file_errors_name_file_and_line(tmp_path, bad, line, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, bad)
    msg = str(e.value)
    assert f"prompts.yaml:{line}" in msg and words in msg, msg


def test_prompt_file_missing_or_without_tasks(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_prompt_set(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="'tasks' mapping"):
        _load(tmp_path, "version: 1\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        _load(tmp_path, "tasks:\n  repeat:\n    wordings: []\n")
