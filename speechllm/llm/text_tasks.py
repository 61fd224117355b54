"""Text tasks on one sentence, their prompt wordings, and exact-match scoring.

The mini LM (``speechllm.llm.mini_lm``) is pretrained on KJV text plus instruction examples of
these tasks, so that it has behaviors a speech LLM can later be checked against (MTBI: the
frozen LLM answers the same prompts about the transcript, the speech model imitates it).

Sentences are what the ASR transcripts hold: :func:`normalize_text` output (lowercase, no
punctuation, apostrophes inside words kept). Every task normalizes its input first, so a raw
verse gives the same answer as its transcript. A *word* is one whitespace-separated token of
that normalized text (``lord's`` is one word, ``well-known`` is two).

Tasks (``TEXT_TASKS[name](sentence, context) -> answer``):

==============  ====================================================================
``repeat``      the sentence itself (normalized)
``continue``    the next verse of the same book (normalized); needs ``context.next_text``
``count_words`` the number of words, as digits (``"12"``)
``first_word``  the first word
``last_word``   the last word
``uppercase``   the sentence in upper case (``"THE LORD'S HOUSE"``)
``source_book`` the full book name, e.g. ``"Psalms"``; needs ``context.book``
``keyword``     the longest word (most characters, an apostrophe counts); ties go to the
                word that occurs first. ``"i will lift up mine eyes"`` -> ``"will"``.
==============  ====================================================================

A task that needs context the caller does not have raises :class:`TaskUnavailable`.

Prompt file (:func:`load_prompt_set`), e.g. ``egs/mini_synth/sllm1/conf/prompts/mini_tasks.yaml``::

    tasks:
      repeat:                      # a task name; the answer comes from TEXT_TASKS[answer or name]
        split: train               # train | heldout (default train)
        wordings:
          - {id: 1, text: "Repeat this sentence: {text}"}
          - {id: 2, text: "Say this again: {text}", split: heldout}
      transcribe:
        answer: repeat             # same answer as repeat
        wordings: [...]
      paraphrase:
        answer: null               # no computable true answer (only an LLM's answer to compare with)
        wordings: [...]

Wording ids are ``task/id`` (``repeat/2``) and never change when wordings are added or removed.
A wording is *held out* when its own split or its task's split is ``heldout``. ``{text}`` marks
where the sentence goes (exactly once; a speech LLM puts its audio placeholder there instead).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from speechllm.text.normalizer import normalize_text
from speechllm.utils.config import ConfigError

# ``bible`` (bible-kjv) book abbreviations -> the book names a reader knows.
BOOK_NAMES: dict[str, str] = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles", "Ezra": "Ezra",
    "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms", "Prv": "Proverbs",
    "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah", "Jer": "Jeremiah",
    "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea", "Joel": "Joel",
    "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah", "Nahum": "Nahum",
    "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah", "Mal": "Malachi",
    "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John", "Acts": "Acts", "Rom": "Romans",
    "1Cor": "1 Corinthians", "2Cor": "2 Corinthians", "Gal": "Galatians", "Eph": "Ephesians",
    "Phi": "Philippians", "Col": "Colossians", "1Th": "1 Thessalonians", "2Th": "2 Thessalonians",
    "1Tim": "1 Timothy", "2Tim": "2 Timothy", "Titus": "Titus", "Phmn": "Philemon", "Heb": "Hebrews",
    "Jas": "James", "1Pet": "1 Peter", "2Pet": "2 Peter", "1Jn": "1 John", "2Jn": "2 John",
    "3Jn": "3 John", "Jude": "Jude", "Rev": "Revelation",
}

SPLITS = ("train", "heldout")
PLACEHOLDER = "{text}"


class TaskUnavailable(ValueError):
    """The task needs context (book, next verse) that the caller did not give."""


@dataclass(frozen=True)
class TaskContext:
    """What some tasks need beyond the sentence: its book's full name and the next verse's text."""

    book: str | None = None
    next_text: str | None = None


def _words(sentence: str) -> list[str]:
    words = normalize_text(sentence).split()
    if not words:
        raise TaskUnavailable("empty sentence")
    return words


def task_repeat(sentence: str, context: TaskContext) -> str:
    return " ".join(_words(sentence))


def task_continue(sentence: str, context: TaskContext) -> str:
    if not context.next_text or not normalize_text(context.next_text):
        raise TaskUnavailable("continue needs the next verse (context.next_text)")
    return normalize_text(context.next_text)


def task_count_words(sentence: str, context: TaskContext) -> str:
    return str(len(_words(sentence)))


def task_first_word(sentence: str, context: TaskContext) -> str:
    return _words(sentence)[0]


def task_last_word(sentence: str, context: TaskContext) -> str:
    return _words(sentence)[-1]


def task_uppercase(sentence: str, context: TaskContext) -> str:
    return " ".join(_words(sentence)).upper()


def task_source_book(sentence: str, context: TaskContext) -> str:
    if not context.book:
        raise TaskUnavailable("source_book needs the book (context.book)")
    return context.book


def task_keyword(sentence: str, context: TaskContext) -> str:
    # max() keeps the first of equally long words.
    return max(_words(sentence), key=len)


TEXT_TASKS: dict[str, Callable[[str, TaskContext], str]] = {
    "repeat": task_repeat,
    "continue": task_continue,
    "count_words": task_count_words,
    "first_word": task_first_word,
    "last_word": task_last_word,
    "uppercase": task_uppercase,
    "source_book": task_source_book,
    "keyword": task_keyword,
}


# ----------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------
def _match_normalized(hyp: str, ref: str) -> bool:
    """Case, punctuation and whitespace do not matter (``normalize_text`` on both sides)."""
    return normalize_text(hyp) == normalize_text(ref)


def _match_uppercase(hyp: str, ref: str) -> bool:
    """Case matters here (it is the task); whitespace and punctuation do not."""
    return normalize_text(hyp) == normalize_text(ref) and hyp.strip().upper() == hyp.strip()


_INT_RE = re.compile(r"[-+]?\d+")


def _match_integer(hyp: str, ref: str) -> bool:
    """The first integer in the answer equals the reference (``"12"``, ``"12 words"``, ``" 12."``)."""
    m = _INT_RE.search(hyp)
    return m is not None and int(m.group()) == int(ref)


SCORERS: dict[str, Callable[[str, str], bool]] = {
    "count_words": _match_integer,
    "uppercase": _match_uppercase,
}


def exact_match(answer_task: str, hyp: str, ref: str) -> bool:
    """Whether ``hyp`` answers like ``ref`` for ``answer_task`` (a ``TEXT_TASKS`` name):
    integers for ``count_words``, case-sensitive for ``uppercase``, else ``normalize_text``
    equality (case, punctuation and extra whitespace ignored)."""
    return SCORERS.get(answer_task, _match_normalized)(hyp, ref)


# ----------------------------------------------------------------------------------------
# Prompt file
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wording:
    """One prompt wording: ``id`` is ``task/N``; ``split`` is its effective split (held out when
    the wording or its task is)."""

    id: str
    task: str
    text: str
    split: str
    line: int

    def render(self, sentence: str) -> str:
        """The prompt with ``sentence`` where ``{text}`` is."""
        return self.text.replace(PLACEHOLDER, sentence)


@dataclass(frozen=True)
class PromptTask:
    """A task of the prompt file: its answer function name, split and wordings."""

    name: str
    answer: str | None  # None: the task has no computable true answer (``answer: null``)
    split: str
    wordings: tuple[Wording, ...]

    def answer_for(self, sentence: str, context: TaskContext) -> str:
        if self.answer is None:
            raise TaskUnavailable(f"task '{self.name}' has no computable answer (answer: null)")
        return TEXT_TASKS[self.answer](sentence, context)


@dataclass(frozen=True)
class PromptSet:
    """The tasks and wordings of one prompt file (see the module docstring)."""

    path: str
    tasks: dict[str, PromptTask]

    def wordings(self, split: str | None = None) -> list[Wording]:
        """All wordings in file order, or those of one effective split (``train``/``heldout``)."""
        return [w for t in self.tasks.values() for w in t.wordings if split is None or w.split == split]

    def wording(self, wording_id: str) -> Wording:
        for w in self.wordings():
            if w.id == wording_id:
                return w
        raise KeyError(f"{self.path}: no wording '{wording_id}'")

    def task_of(self, wording: Wording) -> PromptTask:
        return self.tasks[wording.task]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that keeps 1-based line numbers: a mapping's own under ``__line__``, its keys'
    under ``__key_lines__``; a list is a :class:`_LineList` with ``item_lines``."""


class _LineList(list):
    item_lines: list[int]


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__key_lines__"] = {loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list:
    out = _LineList(loader.construct_sequence(node, deep=True))
    out.item_lines = [item.start_mark.line + 1 for item in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_META = ("__line__", "__key_lines__")

_TASK_KEYS = {"split", "answer", "wordings", "description"}
_WORDING_KEYS = {"id", "text", "split"}


def _split_of(value: object, where: str) -> str:
    if value not in SPLITS:
        raise ConfigError(f"{where}: split must be one of {list(SPLITS)}, got {value!r}")
    return str(value)


def _unknown_keys(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(k for k in mapping if k not in _META and k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _parse_wording(task: str, task_split: str, raw: object, path: str, line: int) -> Wording:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:{line}: task '{task}': each wording must be a mapping "
                          f"{{id: N, text: '... {PLACEHOLDER} ...'}}, got {raw!r}")
    where = f"{path}:{raw['__line__']}: wording of task '{task}'"
    _unknown_keys(raw, _WORDING_KEYS, where)
    wid, text = raw.get("id"), raw.get("text")
    if isinstance(wid, bool) or not isinstance(wid, (int, str)) or not str(wid).strip() or "/" in str(wid):
        raise ConfigError(f"{where}: 'id' must be a number or a name without '/', got {wid!r}")
    if not isinstance(text, str) or text.count(PLACEHOLDER) != 1:
        raise ConfigError(f"{where} {wid}: 'text' must contain {PLACEHOLDER} exactly once, got {text!r}")
    rest = text.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise ConfigError(f"{where} {wid}: braces other than {PLACEHOLDER} in {text!r}")
    split = _split_of(raw.get("split", "train"), f"{where} {wid}")
    effective = "heldout" if "heldout" in (split, task_split) else "train"
    return Wording(id=f"{task}/{wid}", task=task, text=text, split=effective, line=int(raw["__line__"]))


def load_prompt_set(path: str | os.PathLike) -> PromptSet:
    """Read and check a prompt file; errors are :class:`ConfigError` naming ``file:line``."""
    path_s = str(path)
    if not Path(path).is_file():
        raise ConfigError(f"{path_s}: prompt file not found")
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path_s}:{mark.line + 1}" if mark is not None else path_s
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ConfigError(f"{path_s}: expected a top-level mapping with a 'tasks' mapping")
    _unknown_keys(data, {"tasks", "version", "description"}, f"{path_s}:1")
    tasks: dict[str, PromptTask] = {}
    raw_tasks = data["tasks"]
    for name, raw in raw_tasks.items():
        if name in _META:
            continue
        line = raw_tasks["__key_lines__"][name]
        where = f"{path_s}:{line}: task '{name}'"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with 'wordings', got {raw!r}")
        _unknown_keys(raw, _TASK_KEYS, where)
        answer = raw.get("answer", name)
        if answer is not None and answer not in TEXT_TASKS:
            raise ConfigError(f"{where}: answer '{answer}' is not a text task; choose from {sorted(TEXT_TASKS)} "
                              f"or null (no computable answer)")
        split = _split_of(raw.get("split", "train"), where)
        raw_wordings = raw.get("wordings")
        if not isinstance(raw_wordings, list) or not raw_wordings:
            raise ConfigError(f"{where}: 'wordings' must be a non-empty list")
        wordings = [_parse_wording(str(name), split, w, path_s, w_line)
                    for w, w_line in zip(raw_wordings, raw_wordings.item_lines)]
        seen: dict[str, int] = {}
        for w in wordings:
            if w.id in seen:
                raise ConfigError(f"{path_s}:{w.line}: wording id '{w.id}' already used on line {seen[w.id]}")
            seen[w.id] = w.line
        texts = [w.text for w in wordings]
        dupes = sorted({t for t in texts if texts.count(t) > 1})
        if dupes:
            raise ConfigError(f"{where}: the same wording twice: {dupes[0]!r}")
        tasks[str(name)] = PromptTask(name=str(name), answer=None if answer is None else str(answer), split=split,
                                      wordings=tuple(wordings))
    if not tasks:
        raise ConfigError(f"{path_s}: no tasks")
    return PromptSet(path=path_s, tasks=tasks)
