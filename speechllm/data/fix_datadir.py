"""Data-dir surgery: fix (sort, intersect, filter), combine, subset and split.

Nothing is dropped silently: every fix step logs what it kept and why the rest went, and
the dropped ids with their reasons are written to ``<dir>/.backup/dropped.txt`` (the
original files are copied to ``<dir>/.backup/`` first).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from speechllm.data.audio import compute_utt2dur
from speechllm.data.datadir import (
    KNOWN_FILES,
    DataDir,
    DataDirError,
    PathLike,
    Segment,
    load_data_dir,
    write_data_dir,
)
from speechllm.utils.config import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class FixReport:
    """What :func:`fix_data_dir` did: input/kept counts and ``{utt_id: reason}`` of drops."""

    num_input: int
    num_kept: int
    dropped: dict[str, str] = field(default_factory=dict)


def _counts(reasons: Iterable[str]) -> str:
    """``"129 > 20.0 s, 3 not in text"`` from a list of per-utterance reasons."""
    return ", ".join(f"{n:,} {reason}" for reason, n in Counter(reasons).most_common())


def _backup(d: Path) -> Path:
    backup = d / ".backup"
    backup.mkdir(exist_ok=True)
    for name in KNOWN_FILES:
        if (d / name).is_file():
            shutil.copy2(d / name, backup / name)
    return backup


def _intersect(dd: DataDir) -> tuple[list[str], dict[str, str]]:
    """Keep utterances present in every per-utterance file (and whose recording exists)."""
    tables = dd.utt_tables()
    if not tables:
        raise DataDirError(dd.path, None, "no per-utterance files (text, utt2spk, wav.scp, segments, ...)")
    kept, dropped = [], {}
    for utt in dd.utt_ids:
        missing = [name for name, table in tables.items() if utt not in table]
        if missing:
            dropped[utt] = "not in " + ", ".join(missing)
        elif dd.segments is not None and dd.wav_scp is not None and dd.segments[utt].rec_id not in dd.wav_scp:
            dropped[utt] = "recording not in wav.scp"
        else:
            kept.append(utt)
    return kept, dropped


def _ensure_utt2dur(dd: DataDir, utt_ids: list[str]) -> dict[str, str]:
    """Fill ``dd.utt2dur`` for ``utt_ids`` if absent; returns ``{utt: error}`` for unreadable audio."""
    if dd.utt2dur is not None:
        return {}
    if dd.wav_scp is None:
        raise DataDirError(dd.path, None, "cannot filter by duration: no utt2dur and no wav.scp")
    sub = dd.subset(utt_ids)
    logger.info("computing utt2dur for %s utterances (no utt2dur file)", f"{len(utt_ids):,}")
    dd.utt2dur, failures = compute_utt2dur(sub.wav_scp, sub.segments)
    return failures


def _filter(
    dd: DataDir, utt_ids: list[str], min_dur: float | None, max_dur: float | None
) -> tuple[list[str], dict[str, str]]:
    """Drop empty transcripts and utterances outside ``[min_dur, max_dur]`` seconds."""
    failures = _ensure_utt2dur(dd, utt_ids) if (min_dur is not None or max_dur is not None) else {}
    kept, dropped = [], {}
    for utt in utt_ids:
        if dd.text is not None and not dd.text[utt].strip():
            dropped[utt] = "empty text"
        elif utt in failures:
            dropped[utt] = f"unreadable audio: {failures[utt]}"
        elif min_dur is not None and dd.utt2dur[utt] < min_dur:
            dropped[utt] = f"< {min_dur} s"
        elif max_dur is not None and dd.utt2dur[utt] > max_dur:
            dropped[utt] = f"> {max_dur} s"
        else:
            kept.append(utt)
    return kept, dropped


def _summary(reasons: dict[str, str]) -> str:
    return _counts(reasons.values()) or "none dropped"


def _filter_summary(reasons: dict[str, str], min_dur: float | None, max_dur: float | None) -> str:
    """``"129 > 20.0 s, 0 < 0.5 s, 0 empty text"``: every active criterion, zeros included."""
    # "unreadable audio: <message>" collapses to one count; the messages are in dropped.txt
    counts = Counter(r.split(":")[0] for r in reasons.values())
    labels = [f"> {max_dur} s"] if max_dur is not None else []
    labels += [f"< {min_dur} s"] if min_dur is not None else []
    labels += ["empty text"] + (["unreadable audio"] if counts["unreadable audio"] else [])
    return ", ".join(f"{counts[label]:,} {label}" for label in labels)


def fix_data_dir(path: PathLike, min_dur: float | None = None, max_dur: float | None = None) -> FixReport:
    """Sort, intersect ids across files, drop empty text and out-of-range durations, in place.

    Steps (each logged with counts):
      1. intersect: keep utterances present in every per-utterance file;
      2. filter: drop empty transcripts and, if ``min_dur``/``max_dur`` are given, durations
         outside the range (from ``utt2dur``, computed and written if absent; unreadable
         audio is dropped too);
      3. write all files sorted, ``wav.scp`` restricted to used recordings and ``spk2utt``
         rebuilt from ``utt2spk``.

    Originals go to ``<dir>/.backup/``; dropped ids with reasons to ``<dir>/.backup/dropped.txt``.
    """
    d = Path(path)
    dd = load_data_dir(d)
    backup = _backup(d)
    num_input = len(dd.utt_ids)

    kept, dropped = _intersect(dd)
    logger.info("intersect ids: kept %s of %s utterances (%s)", f"{len(kept):,}", f"{num_input:,}", _summary(dropped))
    n_before = len(kept)
    kept, dropped2 = _filter(dd, kept, min_dur, max_dur)
    logger.info(
        "filter: kept %s of %s utterances (%s)",
        f"{len(kept):,}", f"{n_before:,}", _filter_summary(dropped2, min_dur, max_dur),
    )
    dropped.update(dropped2)

    out = dd.subset(kept)
    if dd.wav_scp is not None and dd.segments is not None:
        logger.info("kept %s of %s recordings", f"{len(out.wav_scp):,}", f"{len(dd.wav_scp):,}")
    write_data_dir(out, d)
    atomic_write_text(backup / "dropped.txt", "".join(f"{u}\t{r}\n" for u, r in sorted(dropped.items())))
    logger.info(
        "fix_data_dir %s: kept %s of %s utterances; dropped list in %s",
        d, f"{len(kept):,}", f"{num_input:,}", backup / "dropped.txt",
    )
    return FixReport(num_input=num_input, num_kept=len(kept), dropped=dropped)


# ----------------------------------------------------------------------------------------
# combine / subset / split
# ----------------------------------------------------------------------------------------
def _whole_recording_segments(dd: DataDir) -> None:
    """Give a dir without segments one segment per recording (needed to combine with dirs that have them)."""
    durs = dd.utt2dur
    if durs is None:
        durs, failures = compute_utt2dur(dd.wav_scp or {})
        if failures:
            utt, msg = next(iter(failures.items()))
            raise DataDirError(Path(dd.path) / "wav.scp", None, f"cannot measure '{utt}' to make segments: {msg}")
    dd.segments = {utt: Segment(utt, 0.0, durs[utt]) for utt in (dd.wav_scp or {})}


def merge_data_dirs(dirs: list[DataDir]) -> DataDir:
    """Concatenate in-memory data dirs; utterance ids must be unique across them.

    A table present in only some dirs is left out (logged), except ``segments``: dirs
    without it get whole-recording segments so that every ``wav.scp`` stays usable.
    Recordings may be shared by several dirs if their wav.scp entries are identical.
    """
    if not dirs:
        raise ValueError("merge_data_dirs: no source dirs")
    if any(dd.segments is not None for dd in dirs):
        for dd in dirs:
            if dd.segments is None:
                _whole_recording_segments(dd)
    out = DataDir()
    for attr in ("wav_scp", "segments", "text", "utt2spk", "utt2dur", "utt2num_frames", "feats_scp"):
        present = [dd for dd in dirs if getattr(dd, attr) is not None]
        if not present:
            continue
        if len(present) < len(dirs):
            missing = [str(dd.path) for dd in dirs if getattr(dd, attr) is None]
            logger.warning("%s is missing in %s; left out of the combined dir", attr.replace("_", "."), ", ".join(missing))
            continue
        merged: dict = {}
        owner: dict[str, object] = {}  # id -> source dir, to name both sides of a clash
        for dd in dirs:
            for key, value in getattr(dd, attr).items():
                if key in merged and (attr != "wav_scp" or merged[key] != value):
                    raise DataDirError(dd.path, None, f"{attr.replace('_', '.')} id '{key}' is also in {owner[key]}")
                merged[key] = value
                owner.setdefault(key, dd.path)
        setattr(out, attr, merged)
    return out


def combine_data_dirs(srcs: Iterable[PathLike], dst: PathLike) -> DataDir:
    """Combine data dirs ``srcs`` into ``dst`` (sorted); see :func:`merge_data_dirs`."""
    dirs = [load_data_dir(s) for s in srcs]
    out = merge_data_dirs(dirs)
    write_data_dir(out, dst)
    sizes = " + ".join(f"{len(dd.utt_ids):,}" for dd in dirs)
    logger.info("combined %d dirs into %s: %s utterances (%s)", len(dirs), dst, f"{len(out.utt_ids):,}", sizes)
    return out


def subset_data_dir(
    src: PathLike, dst: PathLike, ids: Iterable[str] | None = None, first: int | None = None
) -> list[str]:
    """Copy the utterances ``ids`` (or the ``first`` N in sorted order) of ``src`` to ``dst``.

    Requested ids that are not in ``src`` are counted and logged. Returns the kept ids.
    """
    if (ids is None) == (first is None):
        raise ValueError("subset_data_dir: give exactly one of ids or first")
    dd = load_data_dir(src)
    all_ids = dd.utt_ids
    if first is not None:
        keep = all_ids[:first]
    else:
        wanted = set(ids)
        keep = [u for u in all_ids if u in wanted]
        if len(keep) < len(wanted):
            logger.warning("subset: %s of %s requested ids are not in %s", f"{len(wanted) - len(keep):,}", f"{len(wanted):,}", src)
    write_data_dir(dd.subset(keep), dst)
    logger.info("subset: wrote %s of %s utterances to %s", f"{len(keep):,}", f"{len(all_ids):,}", dst)
    return keep


def share_of(ids: list[str], nj: int, job: int) -> list[str]:
    """The ``job``-th (1-based) of ``nj`` contiguous shares of ``ids``; sizes differ by at most 1."""
    if not 1 <= job <= nj:
        raise ValueError(f"job {job} is not in 1..{nj}")
    n = len(ids)
    return ids[n * (job - 1) // nj : n * job // nj]


def split_data_dir(src: PathLike, nj: int) -> list[Path]:
    """Split ``src`` by utterance into ``src/split{nj}/{1..nj}`` for parallel jobs.

    Shares are contiguous in sorted order. An existing split that is newer than every
    source file is reused, so that each job may call this without redoing the work.
    """
    src = Path(src)
    if nj < 1:
        raise ValueError(f"split_data_dir: nj must be >= 1, got {nj}")
    split_root = src / f"split{nj}"
    outs = [split_root / str(j) for j in range(1, nj + 1)]
    done = split_root / ".done"
    src_mtime = max((os.path.getmtime(src / n) for n in KNOWN_FILES if (src / n).is_file()), default=0.0)
    if done.is_file() and os.path.getmtime(done) >= src_mtime and all(o.is_dir() for o in outs):
        return outs
    dd = load_data_dir(src)
    ids = dd.utt_ids
    if len(ids) < nj:
        raise DataDirError(src, None, f"cannot split {len(ids)} utterances into {nj} jobs")
    for j, out in enumerate(outs, start=1):
        write_data_dir(dd.subset(share_of(ids, nj, j)), out)
    atomic_write_text(done, f"{len(ids)}\n")
    logger.info("split %s utterances of %s into %d dirs under %s", f"{len(ids):,}", src, nj, split_root)
    return outs
