"""LibriSpeech (openslr.org resource 12) as Kaldi data dirs.

Reads the layout the archives unpack to::

    <data_root>/LibriSpeech/SPEAKERS.TXT                                   (optional: genders)
    <data_root>/LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>-<nnnn>.flac
    <data_root>/LibriSpeech/<part>/<reader>/<chapter>/<reader>-<chapter>.trans.txt

and :func:`prepare_part` writes ``<out_dir>/{wav.scp,text,utt2spk,spk2utt,utt2dur,spk2gender}``:

- utterance ids are LibriSpeech's own (``1272-128104-0000``). They start with the speaker id
  followed by ``-``, which sorts before every digit, so sorting by utterance also sorts by
  speaker (``121-...`` < ``1221-...``, as ``121`` < ``1221``), which Kaldi-style tools need;
- the speaker is the reader (``1272``); ``speaker_unit="chapter"`` makes it reader-chapter
  (``1272-128104``), as Kaldi's and ESPnet's LibriSpeech recipes do (per-chapter CMVN);
- ``wav.scp`` lists absolute FLAC paths: ``load_audio`` reads FLAC through soundfile, so
  neither a ``flac -c -d -s FILE |`` pipe nor the ``flac`` program is needed;
- ``text`` is :func:`~speechllm.text.normalizer.normalize_text` of the transcript, the
  normalizer used for scoring. LibriSpeech transcripts are upper-case letters, apostrophes
  and spaces, so this lowercases them; the only other change it can make is dropping an
  apostrophe at the start or end of a word (``'TIS`` -> ``tis``), which is counted and logged;
- ``utt2dur`` comes from the FLAC header (``soundfile.info``): nothing is decoded;
- ``spk2gender`` (``m``/``f``) comes from ``SPEAKERS.TXT`` when the file is there.

Nothing is dropped silently. A FLAC without a transcript line, a transcript line without a
FLAC, a malformed line (``file:line``), an unreadable or non-16 kHz FLAC and a stray
directory are each a :class:`Problem`; the utterance is left out, the problem counted, logged
and listed in ``<out_dir>/.prepare/skipped.txt``. More problems than
``max_problem_fraction`` of the part (a broken or half-unpacked copy) is an error.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

from speechllm.data.datadir import (
    DEFAULT_REQUIRED,
    DataDir,
    DataDirError,
    PathLike,
    validate_data_dir,
    write_data_dir,
    write_table,
)
from speechllm.text.normalizer import normalize_text
from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
TRAIN_PARTS: tuple[str, ...] = ("train-clean-100", "train-clean-360", "train-other-500")
EVAL_PARTS: tuple[str, ...] = ("dev-clean", "dev-other", "test-clean", "test-other")
PARTS: tuple[str, ...] = EVAL_PARTS + TRAIN_PARTS
# Utterances per part in the final release (one trans.txt line and one FLAC each); the same
# numbers are in PaddleSpeech's LibriSpeech script (NUM_LINES_*). A different count is
# logged as a warning: an incomplete or modified copy.
RELEASE_UTTERANCES: dict[str, int] = {
    "dev-clean": 2703,
    "dev-other": 2864,
    "test-clean": 2620,
    "test-other": 2939,
    "train-clean-100": 28539,
    "train-clean-360": 104014,
    "train-other-500": 148688,
}
SPEAKER_UNITS = ("reader", "chapter")
REQUIRED_FILES = tuple(DEFAULT_REQUIRED) + ("utt2dur",)
LOGGED_PROBLEMS = 20  # per part; all of them are in .prepare/skipped.txt

# Problem kinds (the keys of the counts in logs and reports)
MALFORMED_LINE = "malformed line"
NO_TRANSCRIPT = "audio without transcript"
NO_AUDIO = "transcript without audio"
BAD_AUDIO = "unusable audio"
BAD_NAME = "unexpected name"
NO_GENDER = "speaker not in SPEAKERS.TXT"


@dataclass(frozen=True)
class Problem:
    """Something in the corpus that could not be used; ``where`` is ``file:line`` or ``file``.

    ``skipped`` is False for metadata problems that leave every utterance in (a reader
    missing from SPEAKERS.TXT only leaves spk2gender incomplete).
    """

    where: str
    kind: str
    what: str
    skipped: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Utterance:
    """One usable utterance: its id, reader, chapter, FLAC path, normalized text and length."""

    utt_id: str
    reader: str
    chapter: str
    path: str
    text: str
    duration: float


@dataclass
class ChapterScan:
    """What :func:`scan_chapter` found in one chapter directory."""

    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    normalized: list[str] = field(default_factory=list)  # "file:line: 'RAW' -> 'norm'" beyond lowercasing


@dataclass
class PartReport:
    """The outcome of :func:`prepare_part`."""

    part: str
    out_dir: Path
    num_utterances: int
    num_speakers: int
    seconds: float
    problems: list[Problem]
    num_normalized: int  # transcripts changed beyond lowercasing

    def problem_counts(self) -> str:
        """``"2 audio without transcript, 1 malformed line"`` (``"none"`` when clean)."""
        counts = Counter(p.kind for p in self.problems)
        return ", ".join(f"{n:,} {kind}" for kind, n in counts.most_common()) or "none"


def part_dir_name(part: str) -> str:
    """Data dir name of a part: ``train-clean-100`` -> ``train_clean_100``."""
    return part.replace("-", "_")


def part_path(data_root: PathLike, part: str) -> Path:
    """``<data_root>/LibriSpeech/<part>``; a missing folder is a :class:`FileNotFoundError`."""
    if part not in PARTS:
        raise ValueError(f"unknown LibriSpeech part '{part}'; known: {' '.join(PARTS)}")
    path = Path(data_root) / "LibriSpeech" / part
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: LibriSpeech part not found (download it with local/download_and_untar.sh, "
            "or point --data_root at the folder that holds LibriSpeech/)"
        )
    return path


# ----------------------------------------------------------------------------------------
# Metadata and transcripts
# ----------------------------------------------------------------------------------------
def _decoded_lines(
    path: Path, problems: list[Problem], skipped: bool = True
) -> Iterable[tuple[int, str, str | None]]:
    """``(line_number, line, first_field_if_undecodable)``; a bad UTF-8 line is a problem.

    For an undecodable line, ``line`` is empty and the third item holds its first field
    (decoded with replacement) so that the caller can tell which utterance it concerned.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n"), None
            except UnicodeDecodeError as e:
                problems.append(Problem(f"{path}:{lineno}", MALFORMED_LINE,
                                        f"invalid UTF-8 byte 0x{raw[e.start]:02x} at column {e.start + 1}", skipped))
                fields = raw.split(maxsplit=1)
                yield lineno, "", fields[0].decode("utf-8", "replace") if fields else ""


def read_speakers(path: PathLike) -> tuple[dict[str, str], list[Problem]]:
    """Genders from ``SPEAKERS.TXT``: ``({reader: "m"|"f"}, problems)``.

    Lines are ``ID | SEX | SUBSET | MINUTES | NAME``; ``;`` starts a comment. A name may
    itself hold ``|`` (reader 60 is ``|CBW|Simon``), so a line is split four times only.
    """
    path = Path(path)
    genders: dict[str, str] = {}
    problems: list[Problem] = []
    for lineno, line, _ in _decoded_lines(path, problems, skipped=False):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        where = f"{path}:{lineno}"
        if len(fields) < 5 or not fields[0].isdigit():
            problems.append(Problem(where, MALFORMED_LINE, "expected 'ID | SEX | SUBSET | MINUTES | NAME'", False))
        elif fields[1].upper() not in ("M", "F"):
            problems.append(Problem(where, MALFORMED_LINE, f"reader {fields[0]}: sex '{fields[1]}' is not M or F", False))
        elif fields[0] in genders:
            problems.append(Problem(where, MALFORMED_LINE, f"reader {fields[0]} listed twice", False))
        else:
            genders[fields[0]] = fields[1].lower()
    return genders, problems


@dataclass
class Transcripts:
    """The lines of one ``trans.txt``: usable ones, and ids whose only lines were malformed."""

    lines: dict[str, tuple[int, str]] = field(default_factory=dict)  # utt -> (line, normalized text)
    bad_ids: set[str] = field(default_factory=set)
    normalized: list[str] = field(default_factory=list)


def read_transcripts(path: Path, reader: str, chapter: str, problems: list[Problem]) -> Transcripts:
    """Read ``<reader>-<chapter>.trans.txt``; each malformed line is appended to ``problems``.

    A line is ``<reader>-<chapter>-<nnnn> WORDS ...``. Malformed: an empty line, an id
    alone, an id of another chapter or of another shape, a repeated id, bad UTF-8, or a
    transcript that normalizes to nothing.
    """
    out = Transcripts()
    id_re = re.compile(rf"{re.escape(reader)}-{re.escape(chapter)}-\d+")
    for lineno, line, undecodable_id in _decoded_lines(path, problems):
        if undecodable_id is not None:
            if id_re.fullmatch(undecodable_id):
                out.bad_ids.add(undecodable_id)
            continue
        where = f"{path}:{lineno}"
        fields = line.split(maxsplit=1)
        if not fields:
            problems.append(Problem(where, MALFORMED_LINE, "empty line"))
            continue
        utt = fields[0]
        if not id_re.fullmatch(utt):
            problems.append(Problem(where, MALFORMED_LINE,
                                    f"id '{utt}' is not of the form {reader}-{chapter}-NNNN (this file's chapter)"))
            continue
        if utt in out.lines:
            problems.append(Problem(where, MALFORMED_LINE, f"duplicate id '{utt}' (first on line {out.lines[utt][0]})"))
            continue
        if len(fields) < 2:
            problems.append(Problem(where, MALFORMED_LINE, f"no transcript after the id '{utt}'"))
            out.bad_ids.add(utt)
            continue
        text = normalize_text(fields[1])
        if not text:
            problems.append(Problem(where, MALFORMED_LINE, f"transcript '{fields[1]}' of '{utt}' is empty after normalization"))
            out.bad_ids.add(utt)
            continue
        if text != " ".join(fields[1].lower().split()):
            out.normalized.append(f"{where}: '{fields[1]}' -> '{text}'")
        out.lines[utt] = (lineno, text)
    return out


# ----------------------------------------------------------------------------------------
# Scanning the audio
# ----------------------------------------------------------------------------------------
def _flac_duration(path: Path, expected_sr: int) -> tuple[float | None, str]:
    """``(seconds, "")`` from the FLAC header, or ``(None, why)`` when the file cannot be used."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        return None, f"cannot read the audio header: {e}"
    if info.samplerate != expected_sr:
        return None, f"sample rate {info.samplerate} Hz, expected {expected_sr} Hz"
    if info.frames <= 0:
        return None, "no samples"
    return info.frames / info.samplerate, ""


def scan_chapter(chapter_dir: Path, reader: str, chapter: str, expected_sr: int = SAMPLE_RATE) -> ChapterScan:
    """Match the FLAC files of one chapter with its transcript lines and measure them."""
    scan = ChapterScan()
    trans_path = chapter_dir / f"{reader}-{chapter}.trans.txt"
    trans = Transcripts()
    if trans_path.is_file():
        trans = read_transcripts(trans_path, reader, chapter, scan.problems)
        scan.normalized = trans.normalized
    id_re = re.compile(rf"{re.escape(reader)}-{re.escape(chapter)}-\d+")
    abs_dir = chapter_dir.resolve()
    seen: set[str] = set()
    for flac in sorted(chapter_dir.glob("*.flac")):
        utt = flac.stem
        if not id_re.fullmatch(utt):
            scan.problems.append(Problem(str(flac), BAD_NAME,
                                         f"file name is not {reader}-{chapter}-NNNN.flac (this chapter)"))
            continue
        seen.add(utt)
        if utt not in trans.lines:
            if utt in trans.bad_ids:
                continue  # its malformed line is already reported
            why = (f"no line for '{utt}' in {trans_path}" if trans_path.is_file()
                   else f"no transcript file {trans_path}")
            scan.problems.append(Problem(str(flac), NO_TRANSCRIPT, why))
            continue
        duration, why = _flac_duration(flac, expected_sr)
        if duration is None:
            scan.problems.append(Problem(str(flac), BAD_AUDIO, why))
            continue
        scan.utterances.append(Utterance(utt, reader, chapter, str(abs_dir / flac.name), trans.lines[utt][1], duration))
    for utt, (lineno, _) in trans.lines.items():
        if utt not in seen:
            scan.problems.append(Problem(f"{trans_path}:{lineno}", NO_AUDIO,
                                         f"'{utt}' has no audio file {chapter_dir / (utt + '.flac')}"))
    return scan


def _scan_task(task: tuple[str, str, str, int]) -> ChapterScan:
    chapter_dir, reader, chapter, expected_sr = task
    return scan_chapter(Path(chapter_dir), reader, chapter, expected_sr)


def list_chapters(part_dir: Path) -> tuple[list[tuple[Path, str, str]], list[Problem]]:
    """``([(chapter_dir, reader, chapter), ...], problems)`` in sorted order.

    Reader and chapter directories must be numbers; anything else is a problem (its files
    are not read). Plain files directly under the part or a reader folder are ignored.
    """
    chapters: list[tuple[Path, str, str]] = []
    problems: list[Problem] = []
    for reader_dir in sorted(p for p in part_dir.iterdir() if p.is_dir()):
        if not reader_dir.name.isdigit():
            problems.append(Problem(str(reader_dir), BAD_NAME, "reader directory name is not a number; not read"))
            continue
        for chapter_dir in sorted(p for p in reader_dir.iterdir() if p.is_dir()):
            if not chapter_dir.name.isdigit():
                problems.append(Problem(str(chapter_dir), BAD_NAME, "chapter directory name is not a number; not read"))
                continue
            chapters.append((chapter_dir, reader_dir.name, chapter_dir.name))
    return chapters, problems


def scan_part(part_dir: Path, nj: int = 1, expected_sr: int = SAMPLE_RATE) -> ChapterScan:
    """Scan every chapter of a part (in ``nj`` processes); results in sorted chapter order."""
    chapters, problems = list_chapters(part_dir)
    tasks = [(str(d), r, c, expected_sr) for d, r, c in chapters]
    if nj > 1 and len(tasks) > 1:
        with mp.get_context("fork").Pool(min(nj, len(tasks))) as pool:
            scans = pool.map(_scan_task, tasks, chunksize=max(1, len(tasks) // (4 * nj)))
    else:
        scans = [_scan_task(t) for t in tasks]
    total = ChapterScan(problems=problems)
    for scan in scans:
        total.utterances.extend(scan.utterances)
        total.problems.extend(scan.problems)
        total.normalized.extend(scan.normalized)
    return total


# ----------------------------------------------------------------------------------------
# Writing a data dir
# ----------------------------------------------------------------------------------------
def speaker_of(utt: Utterance, speaker_unit: str) -> str:
    """``reader`` or ``reader-chapter``: both are prefixes of the utterance id."""
    return utt.reader if speaker_unit == "reader" else f"{utt.reader}-{utt.chapter}"


def _done_stamp(out_dir: Path) -> Path:
    return out_dir / ".prepare" / "done"


def _stamp_text(part_dir: Path, speaker_unit: str, num_utts: int, num_problems: int) -> str:
    return (f"source\t{part_dir.resolve()}\nspeaker_unit\t{speaker_unit}\n"
            f"utterances\t{num_utts}\nproblems\t{num_problems}\n")


def is_prepared(data_root: PathLike, part: str, out_dir: PathLike, speaker_unit: str = "reader") -> bool:
    """True when ``out_dir`` was made from this very part folder with this speaker unit (and its files are there)."""
    stamp = _done_stamp(Path(out_dir))
    if not stamp.is_file() or not all((Path(out_dir) / name).is_file() for name in REQUIRED_FILES):
        return False
    fields = dict(line.split("\t", 1) for line in stamp.read_text().splitlines() if "\t" in line)
    source = (Path(data_root) / "LibriSpeech" / part).resolve()
    return fields.get("source") == str(source) and fields.get("speaker_unit") == speaker_unit


def prepare_part(
    data_root: PathLike,
    part: str,
    out_dir: PathLike,
    speaker_unit: str = "reader",
    nj: int = 1,
    expected_sr: int = SAMPLE_RATE,
    max_problem_fraction: float = 0.01,
) -> PartReport:
    """Write the Kaldi data dir of one LibriSpeech part (see the module docstring).

    Args:
        data_root: the folder that holds ``LibriSpeech/``.
        part: one of :data:`PARTS`.
        out_dir: the data dir to write (e.g. ``data/dev_clean``); known files are replaced.
        speaker_unit: ``"reader"`` or ``"chapter"`` (reader-chapter, as Kaldi/ESPnet).
        nj: processes reading FLAC headers.
        expected_sr: a FLAC at another rate is a problem (no silent resampling).
        max_problem_fraction: more problems than this fraction of (utterances + problems)
            raises :class:`DataDirError` after listing them in ``.prepare/skipped.txt``.

    Returns:
        A :class:`PartReport`; every problem has been logged (the first 20 one by one).
    """
    if speaker_unit not in SPEAKER_UNITS:
        raise ValueError(f"speaker_unit must be one of {SPEAKER_UNITS}, got '{speaker_unit}'")
    part_dir = part_path(data_root, part)
    out_dir = Path(out_dir)
    scan = scan_part(part_dir, nj=nj, expected_sr=expected_sr)
    utts, problems = scan.utterances, scan.problems

    speakers_txt = part_dir.parent / "SPEAKERS.TXT"
    spk2gender: dict[str, str] | None = None
    if speakers_txt.is_file():
        genders, speaker_problems = read_speakers(speakers_txt)
        problems.extend(speaker_problems)
        spk2gender = {}
        for reader in sorted({u.reader for u in utts}):
            if reader not in genders:
                problems.append(Problem(str(speakers_txt), NO_GENDER,
                                        f"reader {reader} of {part} is not listed; left out of spk2gender", False))
        for u in utts:
            if u.reader in genders:
                spk2gender[speaker_of(u, speaker_unit)] = genders[u.reader]
    else:
        logger.warning("%s not found: no spk2gender for %s", speakers_txt, part)

    skipped_path = out_dir / ".prepare" / "skipped.txt"
    atomic_write_text(skipped_path, "".join(f"{p}\n" for p in problems))
    _log_problems(part, problems, skipped_path)
    if not utts:
        raise DataDirError(part_dir, None, f"no usable utterances ({len(problems):,} problems, listed in {skipped_path})")
    num_skipped = sum(p.skipped for p in problems)
    if num_skipped > max_problem_fraction * (len(utts) + num_skipped):
        raise DataDirError(
            part_dir, None,
            f"{num_skipped:,} files/lines skipped, {len(utts):,} usable utterances: more than "
            f"max_problem_fraction={max_problem_fraction} allows (a broken or partly unpacked copy?); "
            f"listed in {skipped_path}",
        )

    dd = DataDir(
        wav_scp={u.utt_id: u.path for u in utts},
        text={u.utt_id: u.text for u in utts},
        utt2spk={u.utt_id: speaker_of(u, speaker_unit) for u in utts},
        utt2dur={u.utt_id: u.duration for u in utts},
    )
    stamp = _done_stamp(out_dir)
    if stamp.exists():
        stamp.unlink()
    write_data_dir(dd, out_dir)
    if spk2gender is not None:
        write_table(out_dir / "spk2gender", spk2gender)
    elif (out_dir / "spk2gender").exists():
        (out_dir / "spk2gender").unlink()
    invalid = validate_data_dir(out_dir, required=REQUIRED_FILES)
    if invalid:
        raise DataDirError(out_dir, None, f"the written data dir does not validate: {'; '.join(invalid[:5])}")

    report = PartReport(
        part=part, out_dir=out_dir, num_utterances=len(utts), num_speakers=len(set(dd.utt2spk.values())),
        seconds=sum(u.duration for u in utts), problems=problems, num_normalized=len(scan.normalized),
    )
    _log_summary(report, scan.normalized, part_dir)
    atomic_write_text(stamp, _stamp_text(part_dir, speaker_unit, len(utts), len(problems)))
    return report


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _log_problems(part: str, problems: Sequence[Problem], listed_in: Path) -> None:
    for p in problems[:LOGGED_PROBLEMS]:
        logger.warning("%s: %s %s: %s", part, "skipped" if p.skipped else "note:", p.kind, p)
    if len(problems) > LOGGED_PROBLEMS:
        logger.warning("%s: ... and %s more", part, _plural(len(problems) - LOGGED_PROBLEMS, "problem"))
    if problems:
        counts = Counter(p.kind for p in problems)
        logger.warning("%s: %s (%s); all listed in %s", part, _plural(len(problems), "problem"),
                       ", ".join(f"{n:,} {k}" for k, n in counts.most_common()), listed_in)


def _log_summary(report: PartReport, normalized: Sequence[str], part_dir: Path) -> None:
    logger.info(
        "%s: %s, %s, %.2f h -> %s; problems: %s",
        report.part, _plural(report.num_utterances, "utterance"), _plural(report.num_speakers, "speaker"),
        report.seconds / 3600,
        report.out_dir, report.problem_counts(),
    )
    if normalized:
        logger.info("%s: %s changed beyond lowercasing by normalize_text, e.g. %s",
                    report.part, _plural(len(normalized), "transcript"), "; ".join(normalized[:3]))
    expected = RELEASE_UTTERANCES.get(report.part)
    if expected is not None and report.num_utterances != expected:
        logger.warning("%s: %s utterances, the release has %s: is %s complete (or see the problems above)?",
                       report.part, f"{report.num_utterances:,}", f"{expected:,}", part_dir)
