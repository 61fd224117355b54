"""Kaldi-style data directories: read, write and validate.

A data dir holds one table per file, one entry per line, the id in the first column:

=================  ====================================  ===========================
file               line                                  keyed by
=================  ====================================  ===========================
``wav.scp``        ``rec-id path`` or ``rec-id cmd |``    recording (= utt w/o segments)
``segments``       ``utt-id rec-id start end``            utterance
``text``           ``utt-id transcript words ...``        utterance
``utt2spk``        ``utt-id spk-id``                      utterance
``spk2utt``        ``spk-id utt-id utt-id ...``           speaker
``utt2dur``        ``utt-id seconds``                     utterance
``utt2num_frames`` ``utt-id frames``                      utterance
``feats.scp``      ``utt-id ark-path:offset``             utterance
=================  ====================================  ===========================

Ids are sorted in byte order (``LC_ALL=C sort``); for ``str`` that is Python's code-point
order because UTF-8 preserves it. Readers keep the file order (so the validator can report
unsorted files) and raise :class:`DataDirError` (``"{file}:{line}: {what}"``) on the first
malformed line; :func:`validate_data_dir` collects every problem instead of stopping.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from speechllm.data.audio import AudioError, cut_segment, is_pipe, load_audio
from speechllm.utils.config import atomic_write_text

PathLike = str | os.PathLike


class DataDirError(ValueError):
    """A malformed or inconsistent data-dir file; the message is ``"{file}:{line}: {what}"``.

    ``line`` is 1-based; ``None`` when the problem concerns the whole file (message
    ``"{file}: {what}"``).
    """

    def __init__(self, file: PathLike, line: int | None, what: str):
        self.file = str(file)
        self.line = line
        self.what = what
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {what}")


class Segment(NamedTuple):
    """One line of ``segments``: an utterance cut from a recording, times in seconds."""

    rec_id: str
    start: float
    end: float


# ----------------------------------------------------------------------------------------
# Line-level reading
# ----------------------------------------------------------------------------------------
def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with the newline stripped; UTF-8 errors name the line.

    Decoding happens per line (not per file) so that a bad byte is reported where it is.
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(path, None, "file not found")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataDirError(
                    path, lineno, f"invalid UTF-8 byte 0x{raw[e.start]:02x} at column {e.start + 1}"
                ) from None
            yield lineno, line.rstrip("\r\n")


ValueParser = Callable[[str], object]  # parses the rest of a line; raises ValueError(what)


def read_table(
    path: PathLike,
    parse_value: ValueParser,
    errors: list[str] | None = None,
) -> dict[str, tuple[int, object]]:
    """Read ``id rest-of-line`` lines into ``{id: (line_number, parse_value(rest))}``.

    Blank lines, duplicate ids and values that ``parse_value`` rejects are errors. With
    ``errors=None`` the first one raises :class:`DataDirError`; with a list, each error is
    appended as a message and the line is skipped (used by the validator to report all).
    File order is kept.
    """
    out: dict[str, tuple[int, object]] = {}

    def fail(lineno: int | None, what: str) -> None:
        err = DataDirError(path, lineno, what)
        if errors is None:
            raise err
        errors.append(str(err))

    try:
        for lineno, line in iter_lines(path):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                fail(lineno, "empty line")
                continue
            key, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            if key in out:
                fail(lineno, f"duplicate id '{key}' (first on line {out[key][0]})")
                continue
            try:
                value = parse_value(rest)
            except ValueError as e:
                fail(lineno, f"'{key}': {e}")
                continue
            out[key] = (lineno, value)
    except DataDirError as e:  # unreadable file or bad UTF-8: the rest of the file is lost
        if errors is None:
            raise
        errors.append(str(e))
    return out


def _strip_lines(table: Mapping[str, tuple[int, object]]) -> dict:
    return {k: v for k, (_, v) in table.items()}


# Value parsers: each gets the text after the id and raises ValueError naming what is wrong.
def parse_nonempty(rest: str) -> str:
    """A value that must be present (wav.scp, feats.scp)."""
    if not rest.strip():
        raise ValueError("missing value after the id")
    return rest.strip()


def parse_text(rest: str) -> str:
    """A transcript; may be empty here (the validator and fix_data_dir report empty text)."""
    return " ".join(rest.split())


def parse_one_field(rest: str) -> str:
    """Exactly one more field (utt2spk)."""
    parts = rest.split()
    if len(parts) != 1:
        raise ValueError(f"expected 2 fields, got {len(parts) + 1}")
    return parts[0]


def parse_fields(rest: str) -> list[str]:
    """One or more fields (spk2utt)."""
    parts = rest.split()
    if not parts:
        raise ValueError("missing fields after the id")
    return parts


def parse_positive_float(rest: str) -> float:
    """A duration in seconds (utt2dur)."""
    value = parse_one_field(rest)
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"not a number: '{value}'") from None
    if not x >= 0:  # also rejects NaN
        raise ValueError(f"negative or NaN duration: {value}")
    return x


def parse_nonneg_int(rest: str) -> int:
    """A frame count (utt2num_frames)."""
    value = parse_one_field(rest)
    try:
        x = int(value)
    except ValueError:
        raise ValueError(f"not an integer: '{value}'") from None
    if x < 0:
        raise ValueError(f"negative frame count: {value}")
    return x


def parse_segment(rest: str) -> Segment:
    """``rec-id start end``; start < end is checked by the validator, not here."""
    parts = rest.split()
    if len(parts) != 3:
        raise ValueError(f"expected 4 fields (utt-id rec-id start end), got {len(parts) + 1}")
    try:
        return Segment(parts[0], float(parts[1]), float(parts[2]))
    except ValueError:
        raise ValueError(f"start/end are not numbers: '{parts[1]}' '{parts[2]}'") from None


# ----------------------------------------------------------------------------------------
# Public readers
# ----------------------------------------------------------------------------------------
def read_wav_scp(path: PathLike) -> dict[str, str]:
    """``{rec_id: entry}``; an entry is a path or a shell command ending in ``|``."""
    return _strip_lines(read_table(path, parse_nonempty))


def read_segments(path: PathLike) -> dict[str, Segment]:
    """``{utt_id: Segment(rec_id, start, end)}``."""
    return _strip_lines(read_table(path, parse_segment))


def read_text(path: PathLike) -> dict[str, str]:
    """``{utt_id: transcript}`` (whitespace normalised to single spaces; may be empty)."""
    return _strip_lines(read_table(path, parse_text))


def read_utt2spk(path: PathLike) -> dict[str, str]:
    """``{utt_id: spk_id}``."""
    return _strip_lines(read_table(path, parse_one_field))


def read_spk2utt(path: PathLike) -> dict[str, list[str]]:
    """``{spk_id: [utt_id, ...]}``."""
    return _strip_lines(read_table(path, parse_fields))


def read_utt2dur(path: PathLike) -> dict[str, float]:
    """``{utt_id: seconds}``."""
    return _strip_lines(read_table(path, parse_positive_float))


def read_utt2num_frames(path: PathLike) -> dict[str, int]:
    """``{utt_id: number of feature frames}``."""
    return _strip_lines(read_table(path, parse_nonneg_int))


def read_feats_scp(path: PathLike) -> dict[str, str]:
    """``{utt_id: rxspecifier}`` such as ``/abs/feats.1.ark:123`` (read with kaldiio)."""
    return _strip_lines(read_table(path, parse_nonempty))


# ----------------------------------------------------------------------------------------
# Writers (always sorted by id, written atomically)
# ----------------------------------------------------------------------------------------
def format_seconds(x: float) -> str:
    """Seconds with at most 4 decimals and no trailing zeros (``1.5``, ``0.0333``, ``3``)."""
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def write_table(path: PathLike, table: Mapping[str, object], fmt: Callable[[object], str] = str) -> None:
    """Write ``id fmt(value)`` lines sorted by id; an empty formatted value writes the id alone."""
    lines = []
    for key in sorted(table):
        value = fmt(table[key])
        lines.append(f"{key} {value}" if value else key)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_wav_scp(path: PathLike, wav_scp: Mapping[str, str]) -> None:
    """Write ``rec_id entry`` lines."""
    write_table(path, wav_scp)


def write_segments(path: PathLike, segments: Mapping[str, Segment]) -> None:
    """Write ``utt_id rec_id start end`` lines."""
    write_table(path, segments, lambda s: f"{s.rec_id} {format_seconds(s.start)} {format_seconds(s.end)}")


def write_text(path: PathLike, text: Mapping[str, str]) -> None:
    """Write ``utt_id transcript`` lines."""
    write_table(path, text)


def write_utt2spk(path: PathLike, utt2spk: Mapping[str, str]) -> None:
    """Write ``utt_id spk_id`` lines."""
    write_table(path, utt2spk)


def write_spk2utt(path: PathLike, spk2utt: Mapping[str, Iterable[str]]) -> None:
    """Write ``spk_id utt1 utt2 ...`` lines (utterances sorted)."""
    write_table(path, spk2utt, lambda utts: " ".join(sorted(utts)))


def write_utt2dur(path: PathLike, utt2dur: Mapping[str, float]) -> None:
    """Write ``utt_id seconds`` lines."""
    write_table(path, utt2dur, format_seconds)


def write_utt2num_frames(path: PathLike, utt2num_frames: Mapping[str, int]) -> None:
    """Write ``utt_id frames`` lines."""
    write_table(path, utt2num_frames)


def write_feats_scp(path: PathLike, feats_scp: Mapping[str, str]) -> None:
    """Write ``utt_id rxspecifier`` lines."""
    write_table(path, feats_scp)


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert ``utt2spk``; each speaker's utterances sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


# ----------------------------------------------------------------------------------------
# A whole data dir in memory
# ----------------------------------------------------------------------------------------
@dataclass
class DataDir:
    """The tables of one data dir; ``None`` means the file is absent.

    ``spk2utt`` is not stored: it is always derived from ``utt2spk`` when written.
    """

    wav_scp: dict[str, str] | None = None
    segments: dict[str, Segment] | None = None
    text: dict[str, str] | None = None
    utt2spk: dict[str, str] | None = None
    utt2dur: dict[str, float] | None = None
    utt2num_frames: dict[str, int] | None = None
    feats_scp: dict[str, str] | None = None
    path: Path | None = field(default=None, compare=False)

    def utt_tables(self) -> dict[str, dict]:
        """The present per-utterance tables by file name (wav.scp counts when no segments)."""
        out = {}
        for name, attr in UTT_FILES.items():
            table = getattr(self, attr)
            if table is not None:
                out[name] = table
        if self.segments is None and self.wav_scp is not None:
            out["wav.scp"] = self.wav_scp
        return out

    @property
    def utt_ids(self) -> list[str]:
        """Sorted utterance ids: the union over all per-utterance tables."""
        ids: set[str] = set()
        for table in self.utt_tables().values():
            ids.update(table)
        return sorted(ids)

    def subset(self, utt_ids: Iterable[str]) -> "DataDir":
        """A copy restricted to ``utt_ids`` (and, with segments, to the recordings they use)."""
        keep = set(utt_ids)
        out = DataDir(path=None)
        for attr in UTT_FILES.values():
            table = getattr(self, attr)
            if table is not None:
                setattr(out, attr, {k: v for k, v in table.items() if k in keep})
        if self.wav_scp is not None:
            if out.segments is not None:
                recs = {seg.rec_id for seg in out.segments.values()}
            else:
                recs = keep
            out.wav_scp = {k: v for k, v in self.wav_scp.items() if k in recs}
        return out


# file name -> DataDir attribute, for the per-utterance tables
UTT_FILES = {
    "segments": "segments",
    "text": "text",
    "utt2spk": "utt2spk",
    "utt2dur": "utt2dur",
    "utt2num_frames": "utt2num_frames",
    "feats.scp": "feats_scp",
}
_READERS = {
    "wav_scp": ("wav.scp", read_wav_scp, write_wav_scp),
    "segments": ("segments", read_segments, write_segments),
    "text": ("text", read_text, write_text),
    "utt2spk": ("utt2spk", read_utt2spk, write_utt2spk),
    "utt2dur": ("utt2dur", read_utt2dur, write_utt2dur),
    "utt2num_frames": ("utt2num_frames", read_utt2num_frames, write_utt2num_frames),
    "feats_scp": ("feats.scp", read_feats_scp, write_feats_scp),
}
KNOWN_FILES = tuple(name for name, _, _ in _READERS.values()) + ("spk2utt",)


def load_data_dir(path: PathLike) -> DataDir:
    """Read every known file present in ``path`` (``spk2utt`` is ignored: derived on write)."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(path, None, "data dir not found")
    dd = DataDir(path=path)
    for attr, (name, reader, _) in _READERS.items():
        if (path / name).is_file():
            setattr(dd, attr, reader(path / name))
    return dd


def write_data_dir(dd: DataDir, path: PathLike) -> None:
    """Write every present table sorted, plus ``spk2utt`` from ``utt2spk``.

    Known files whose table is absent are removed, so a stale ``feats.scp`` or ``segments``
    never survives next to a rewritten ``wav.scp``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for attr, (name, _, writer) in _READERS.items():
        table = getattr(dd, attr)
        if table is not None:
            writer(path / name, table)
        elif (path / name).exists():
            (path / name).unlink()
    if dd.utt2spk is not None:
        write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(dd.utt2spk))
    elif (path / "spk2utt").exists():
        (path / "spk2utt").unlink()


# ----------------------------------------------------------------------------------------
# The audio of a data dir's utterances
# ----------------------------------------------------------------------------------------
class DataDirAudio:
    """Load utterances of a data dir from ``wav.scp`` (cut by ``segments`` when present).

    A piped recording is run once for all its consecutive segments (the last one is cached),
    so reading in id order, as the dump jobs do, decodes each piped recording once; random
    access (training) may run a pipe once per segment. ``where(utt)`` names the ``wav.scp``
    line for error messages.
    """

    def __init__(self, data_dir: PathLike, expected_sr: int | None = None):
        data_dir = Path(data_dir)
        self.wav_path = data_dir / "wav.scp"
        self.wav = read_table(self.wav_path, parse_nonempty)  # {rec: (line, entry)}
        seg_path = data_dir / "segments"
        self.segments: dict[str, Segment] | None = read_segments(seg_path) if seg_path.is_file() else None
        self.expected_sr = expected_sr
        self._cached: tuple[str, np.ndarray, int] | None = None  # (rec, whole wave, sr) of the last pipe

    def utt_ids(self) -> list[str]:
        """Sorted utterance ids (segments, or the recordings themselves)."""
        return sorted(self.segments if self.segments is not None else self.wav)

    def where(self, utt: str) -> str:
        """``wav.scp:LINE`` of the utterance's recording."""
        rec = self.segments[utt].rec_id if self.segments is not None else utt
        line = self.wav[rec][0] if rec in self.wav else "?"
        return f"{self.wav_path}:{line}"

    def load(self, utt: str) -> tuple[np.ndarray, int]:
        """``(samples, sample_rate)`` of utterance ``utt``; raises ``AudioError``."""
        if self.segments is None:
            return load_audio(self.wav[utt][1], expected_sr=self.expected_sr)
        seg = self.segments[utt]
        if seg.rec_id not in self.wav:
            raise AudioError(f"recording '{seg.rec_id}' is not in wav.scp")
        entry = self.wav[seg.rec_id][1]
        if not is_pipe(entry):  # plain files are read by seeking, no cache needed
            return load_audio(entry, segment=(seg.start, seg.end), expected_sr=self.expected_sr)
        if self._cached is None or self._cached[0] != seg.rec_id:
            wave, sr = load_audio(entry, expected_sr=self.expected_sr)
            self._cached = (seg.rec_id, wave, sr)
        _, wave, sr = self._cached
        return cut_segment(wave, sr, (seg.start, seg.end), f"recording '{seg.rec_id}'"), sr

    def __getstate__(self) -> dict:
        # DataLoader workers get a copy: no need to ship a cached recording along
        state = self.__dict__.copy()
        state["_cached"] = None
        return state


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------
DEFAULT_REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")
_PARSERS: dict[str, ValueParser] = {
    "wav.scp": parse_nonempty,
    "segments": parse_segment,
    "text": parse_text,
    "utt2spk": parse_one_field,
    "spk2utt": parse_fields,
    "utt2dur": parse_positive_float,
    "utt2num_frames": parse_nonneg_int,
    "feats.scp": parse_nonempty,
}
Table = dict[str, tuple[int, object]]


def _check_sorted(path: Path, table: Table, problems: list[str]) -> None:
    """Report the first out-of-order id of a file (one message per file is enough)."""
    prev = None
    for key, (lineno, _) in table.items():
        if prev is not None and key < prev:
            problems.append(
                f"{path}:{lineno}: ids not sorted: '{key}' comes after '{prev}' "
                "(run fix_data_dir, or sort with LC_ALL=C sort)"
            )
            return
        prev = key


def _compare_ids(d: Path, ref: str, other: str, tables: dict[str, Table], problems: list[str]) -> None:
    """Name each utterance id that is in one of two per-utterance files but not the other."""
    ref_t, other_t = tables[ref], tables[other]
    for key, (lineno, _) in other_t.items():
        if key not in ref_t:
            problems.append(f"{d / other}:{lineno}: utterance '{key}' is not in {ref}")
    for key, (lineno, _) in ref_t.items():
        if key not in other_t:
            problems.append(f"{d / ref}:{lineno}: utterance '{key}' has no entry in {other}")


def _check_speakers(d: Path, tables: dict[str, Table], problems: list[str]) -> None:
    """utt2spk and spk2utt must describe the same utterance -> speaker map."""
    from_spk2utt: dict[str, tuple[str, int]] = {}  # utt -> (spk, spk2utt line)
    for spk, (lineno, utts) in tables["spk2utt"].items():
        for utt in utts:
            if utt in from_spk2utt:
                problems.append(
                    f"{d / 'spk2utt'}:{lineno}: utterance '{utt}' listed under both "
                    f"'{from_spk2utt[utt][0]}' and '{spk}'"
                )
                continue
            from_spk2utt[utt] = (spk, lineno)
    utt2spk = tables["utt2spk"]
    for utt, (lineno, spk) in utt2spk.items():
        if utt not in from_spk2utt:
            problems.append(f"{d / 'utt2spk'}:{lineno}: utterance '{utt}' (speaker '{spk}') is not in spk2utt")
        elif from_spk2utt[utt][0] != spk:
            other_spk, other_line = from_spk2utt[utt]
            problems.append(
                f"{d / 'spk2utt'}:{other_line}: utterance '{utt}' is under speaker '{other_spk}' "
                f"but utt2spk:{lineno} gives '{spk}'"
            )
    for utt, (spk, lineno) in from_spk2utt.items():
        if utt not in utt2spk:
            problems.append(f"{d / 'spk2utt'}:{lineno}: utterance '{utt}' (speaker '{spk}') is not in utt2spk")


def _check_segments(d: Path, tables: dict[str, Table], rec_durs: dict[str, float], problems: list[str]) -> None:
    wav = tables.get("wav.scp")
    for utt, (lineno, seg) in tables["segments"].items():
        if wav is not None and seg.rec_id not in wav:
            problems.append(f"{d / 'segments'}:{lineno}: recording '{seg.rec_id}' of '{utt}' is not in wav.scp")
        if not 0 <= seg.start < seg.end:
            problems.append(f"{d / 'segments'}:{lineno}: '{utt}': need 0 <= start < end, got {seg.start} {seg.end}")
        dur = rec_durs.get(seg.rec_id)
        if dur is not None and seg.end > dur + 0.5:  # same overshoot tolerance as load_audio
            problems.append(
                f"{d / 'segments'}:{lineno}: '{utt}' ends at {seg.end} s, past the end of "
                f"recording '{seg.rec_id}' ({dur:.3f} s)"
            )


def _check_audio(
    d: Path, wav: Table, check_audio: bool, expected_sr: int | None, problems: list[str]
) -> dict[str, float]:
    """Plain paths must exist; with ``check_audio`` every entry is decoded. Returns durations."""
    rec_durs: dict[str, float] = {}
    for rec, (lineno, entry) in wav.items():
        if not is_pipe(entry) and not os.path.isfile(entry):
            problems.append(f"{d / 'wav.scp'}:{lineno}: audio file not found: {entry}")
            continue
        if not check_audio:
            continue
        try:
            samples, sr = load_audio(entry, expected_sr=expected_sr)
        except AudioError as e:
            problems.append(f"{d / 'wav.scp'}:{lineno}: {e}")
            continue
        rec_durs[rec] = samples.shape[0] / sr
    return rec_durs


def validate_data_dir(
    path: PathLike,
    required: Iterable[str] = DEFAULT_REQUIRED,
    check_audio: bool = False,
    expected_sr: int | None = None,
) -> list[str]:
    """Check a data dir and return every problem found, each as ``"{file}:{line}: {what}"``.

    Checks: required files present; every line parses (UTF-8, fields, numbers, no
    duplicate ids); ids sorted; per-utterance files (text, utt2spk, segments or wav.scp,
    utt2dur, utt2num_frames, feats.scp) hold the same ids (each difference named, with
    the file that lacks it); no empty transcripts; segments name existing recordings and
    have ``0 <= start < end``; utt2spk and spk2utt agree; plain audio paths exist.

    With ``check_audio=True`` every wav.scp entry (pipes included) is decoded, its sample
    rate compared with ``expected_sr`` (if given), and segments are checked against the
    recording length. This reads all audio, so it is slow on big corpora.

    An empty list means the dir is valid.
    """
    d = Path(path)
    if not d.is_dir():
        return [f"{d}: data dir not found"]
    problems: list[str] = []
    for name in required:
        if not (d / name).is_file():
            problems.append(f"{d / name}: required file missing")

    tables: dict[str, Table] = {}
    for name, parser in _PARSERS.items():
        if (d / name).is_file():
            tables[name] = read_table(d / name, parser, problems)
            _check_sorted(d / name, tables[name], problems)

    # Per-utterance files must agree; the first present one is the reference.
    utt_files = [n for n in ("utt2spk", "text", "segments", "utt2dur", "utt2num_frames", "feats.scp") if n in tables]
    if "segments" not in tables and "wav.scp" in tables:
        utt_files.append("wav.scp")  # without segments, recordings are utterances
    for other in utt_files[1:]:
        _compare_ids(d, utt_files[0], other, tables, problems)

    for utt, (lineno, words) in tables.get("text", {}).items():
        if not words:
            problems.append(f"{d / 'text'}:{lineno}: empty transcript for '{utt}'")
    if "utt2spk" in tables and "spk2utt" in tables:
        _check_speakers(d, tables, problems)
    rec_durs: dict[str, float] = {}
    if "wav.scp" in tables:
        rec_durs = _check_audio(d, tables["wav.scp"], check_audio, expected_sr, problems)
    if "segments" in tables:
        _check_segments(d, tables, rec_durs, problems)
    return problems
