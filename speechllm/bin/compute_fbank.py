"""Compute Kaldi fbank features for a data dir, optionally as one of N parallel jobs.

Job J of N takes the J-th contiguous share of the sorted utterances and writes
``OUT/feats.J.ark``, ``OUT/feats.J.scp``, ``OUT/utt2num_frames.J`` (and ``OUT/utt2dur.J``
with --write_utt2dur). Unreadable or too-short audio is skipped, counted, and listed with
its wav.scp line in ``OUT/skipped.J.txt``. ``--combine N`` then merges the shares into
``OUT/feats.scp`` and ``OUT/utt2num_frames`` (sorted); with one job this happens at once.

Example::

    for j in 1 2 3 4; do
      python -m speechllm.bin.compute_fbank --data_dir data/train --out_dir dump/train --nj 4 --job $j &
    done; wait
    python -m speechllm.bin.compute_fbank --out_dir dump/train --combine 4
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import kaldiio
from tqdm import tqdm

from speechllm.bin import add_job_arguments, check_job_arguments, exit_on_user_error
from speechllm.data.audio import AudioError
from speechllm.data.datadir import (
    DataDirAudio,
    DataDirError,
    read_feats_scp,
    read_utt2dur,
    read_utt2num_frames,
    write_feats_scp,
    write_utt2dur,
    write_utt2num_frames,
)
from speechllm.data.fix_datadir import share_of
from speechllm.features.fbank import compute_fbank
from speechllm.utils.config import atomic_write_text, save_config
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


@dataclass
class FbankJobResult:
    """What one job wrote, and what it skipped (``{utt_id: "wav.scp:LINE: reason"}``)."""

    num_written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    skip_kinds: Counter = field(default_factory=Counter)


def compute_fbank_job(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    nj: int = 1,
    job: int = 1,
    fbank_opts: dict | None = None,
    expected_sr: int | None = None,
    save_utt2dur: bool = False,
) -> FbankJobResult:
    """Features of the ``job``-th of ``nj`` shares of ``data_dir`` into ``out_dir/feats.{job}.*``.

    ``fbank_opts`` are keyword arguments of :func:`speechllm.features.fbank.compute_fbank`.
    Raises :class:`DataDirError` if every utterance of the share had to be skipped.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fbank_opts = dict(fbank_opts or {})
    reader = DataDirAudio(data_dir, expected_sr)
    utts = share_of(reader.utt_ids(), nj, job)
    result, frames, durs = FbankJobResult(), {}, {}
    ark = (out / f"feats.{job}.ark").resolve()  # absolute: feats.scp stays valid from any cwd
    scp_tmp = out / f".feats.{job}.scp.tmp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp_tmp}") as writer:
        for utt in tqdm(utts, desc=f"fbank job {job}/{nj}", unit="utt", disable=None):
            try:
                wave, sr = reader.load(utt)
                feats = compute_fbank(wave, sr, **fbank_opts)
            except AudioError as e:
                result.skipped[utt], kind = f"{reader.where(utt)}: {e}", "unreadable audio"
            except ValueError as e:  # shorter than one frame
                result.skipped[utt], kind = f"{reader.where(utt)}: {e}", "too short"
            else:
                writer(utt, feats.numpy())
                frames[utt], durs[utt] = feats.shape[0], wave.shape[0] / sr
                continue
            result.skip_kinds[kind] += 1
    # the scp appears last, so a job that died midway leaves no feats.J.scp for --combine
    os.replace(scp_tmp, out / f"feats.{job}.scp")
    write_utt2num_frames(out / f"utt2num_frames.{job}", frames)
    if save_utt2dur:
        write_utt2dur(out / f"utt2dur.{job}", durs)
    skipped_path = out / f"skipped.{job}.txt"
    atomic_write_text(skipped_path, "".join(f"{u}\t{why}\n" for u, why in sorted(result.skipped.items())))
    if job == 1:
        save_config({"fbank": fbank_opts, "sample_rate": expected_sr}, out / "fbank.yaml")
    result.num_written = len(frames)
    kinds = ", ".join(f"{n:,} {k}" for k, n in result.skip_kinds.most_common()) or "none"
    logger.info(
        "fbank job %d/%d: wrote %s utterances; skipped %s of %s utterances (%s); list in %s",
        job, nj, f"{len(frames):,}", f"{len(result.skipped):,}", f"{len(utts):,}", kinds, skipped_path,
    )
    if utts and not frames:
        raise DataDirError(data_dir / "wav.scp", None, f"all {len(utts):,} utterances of job {job} were skipped; see {skipped_path}")
    return result


def combine_fbank_jobs(out_dir: str | os.PathLike, nj: int) -> int:
    """Merge ``feats.{1..nj}.scp``, ``utt2num_frames.J`` (and ``utt2dur.J``, ``skipped.J.txt``)
    into sorted ``feats.scp``, ``utt2num_frames`` (``utt2dur``, ``skipped.txt``); returns #utts."""
    out = Path(out_dir)
    feats, frames, durs, skipped = {}, {}, {}, []
    have_durs = all((out / f"utt2dur.{j}").is_file() for j in range(1, nj + 1))
    for j in range(1, nj + 1):
        scp = out / f"feats.{j}.scp"
        if not scp.is_file():
            raise DataDirError(scp, None, f"missing: job {j} of {nj} has not finished")
        part = read_feats_scp(scp)
        clash = next((u for u in part if u in feats), None)
        if clash is not None:
            raise DataDirError(scp, None, f"utterance '{clash}' is also in an earlier job")
        feats.update(part)
        frames.update(read_utt2num_frames(out / f"utt2num_frames.{j}"))
        if have_durs:
            durs.update(read_utt2dur(out / f"utt2dur.{j}"))
        if (out / f"skipped.{j}.txt").is_file():
            skipped += (out / f"skipped.{j}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    write_feats_scp(out / "feats.scp", feats)
    write_utt2num_frames(out / "utt2num_frames", frames)
    if have_durs:
        write_utt2dur(out / "utt2dur", durs)
    atomic_write_text(out / "skipped.txt", "".join(sorted(skipped)))
    logger.info(
        "combined %d jobs: %s utterances in %s (%s skipped, list in %s)",
        nj, f"{len(feats):,}", out / "feats.scp", f"{len(skipped):,}", out / "skipped.txt",
    )
    return len(feats)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", help="data dir with wav.scp (and segments); not needed with --combine")
    p.add_argument("--out_dir", required=True)
    add_job_arguments(p)
    p.add_argument("--num_mel_bins", type=int, default=80)
    p.add_argument("--frame_length", type=float, default=25.0, help="ms")
    p.add_argument("--frame_shift", type=float, default=10.0, help="ms")
    p.add_argument("--dither", type=float, default=0.0)
    p.add_argument("--sample_rate", type=int, default=None, help="expected rate; other rates are skipped")
    p.add_argument("--write_utt2dur", action="store_true", help="also write utt2dur from the decoded audio")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if args.combine is not None:
        combine_fbank_jobs(args.out_dir, args.combine)
        return 0
    check_job_arguments(parser, args, required=("data_dir",))
    opts = dict(num_mel_bins=args.num_mel_bins, frame_length=args.frame_length, frame_shift=args.frame_shift, dither=args.dither)
    compute_fbank_job(args.data_dir, args.out_dir, args.nj, args.job, opts, args.sample_rate, args.write_utt2dur)
    if args.nj == 1:
        combine_fbank_jobs(args.out_dir, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
