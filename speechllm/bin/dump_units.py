"""Discrete units of dumped encoder features with a trained k-means model, as N parallel jobs.

Job J of N takes the J-th contiguous share of the sorted utterances of ``--feats_scp`` and
writes ``OUT/units.J`` (``utt u1 u2 ...``, one unit per frame) and ``OUT/units_dedup.J``
(consecutive repeats removed). ``--combine N`` merges them into ``OUT/units`` and
``OUT/units_dedup`` (sorted); with one job this happens at once. Utterances without frames are
skipped, counted and listed in ``OUT/skipped.J.txt``.

Example::

    python -m speechllm.bin.dump_units --feats_scp dump/hubert_l9/test/feats.scp \
        --kmeans dump/hubert_l9/kmeans100.pt --out_dir dump/hubert_l9/units100/test --nj 2 --job 1
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from speechllm.bin import add_job_arguments, check_job_arguments, exit_on_user_error
from speechllm.data.datadir import DataDirError, read_feats_scp
from speechllm.data.fix_datadir import share_of
from speechllm.units.kmeans import KMeans
from speechllm.units.sequences import dedup_units, read_units, write_units
from speechllm.utils.config import atomic_write_text
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)
OUTPUTS = ("units", "units_dedup")


def dump_units_job(feats_scp: str | Path, kmeans: KMeans, out_dir: str | Path, nj: int = 1, job: int = 1) -> int:
    """Write ``units.{job}`` and ``units_dedup.{job}`` for this job's share; returns utterances written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = read_feats_scp(feats_scp)
    utts = share_of(sorted(feats), nj, job)
    units, dedup, skipped = {}, {}, {}
    for utt in tqdm(utts, desc=f"units job {job}/{nj}", unit="utt", disable=None):
        mat = np.asarray(kaldiio.load_mat(feats[utt]), dtype=np.float32)
        if mat.ndim != 2 or mat.shape[0] == 0:
            skipped[utt] = f"no frames (shape {list(mat.shape)})"
            continue
        try:
            seq = kmeans.predict(mat).tolist()
        except ValueError as e:  # features of another encoder/layer than the k-means model's
            raise DataDirError(feats_scp, None, f"'{utt}': {e}") from None
        units[utt], dedup[utt] = seq, dedup_units(seq)
    write_units(out / f"units.{job}", units)
    write_units(out / f"units_dedup.{job}", dedup)
    atomic_write_text(out / f"skipped.{job}.txt", "".join(f"{u}\t{why}\n" for u, why in sorted(skipped.items())))
    frames = sum(len(s) for s in units.values())
    kept = sum(len(s) for s in dedup.values())
    logger.info("units job %d/%d: %s utterances, %s frames -> %s units after dedup (%.1f%%); skipped %s of %s",
                job, nj, f"{len(units):,}", f"{frames:,}", f"{kept:,}", 100.0 * kept / max(frames, 1),
                f"{len(skipped):,}", f"{len(utts):,}")
    return len(units)


def combine_units_jobs(out_dir: str | Path, nj: int) -> int:
    """Merge ``units.{1..nj}`` / ``units_dedup.J`` / ``skipped.J.txt``; returns the utterance count."""
    out = Path(out_dir)
    for name in OUTPUTS:
        merged: dict[str, list[int]] = {}
        for j in range(1, nj + 1):
            part_path = out / f"{name}.{j}"
            if not part_path.is_file():
                raise DataDirError(part_path, None, f"missing: job {j} of {nj} has not finished")
            merged.update(read_units(part_path))
        write_units(out / name, merged)
    skipped = "".join((out / f"skipped.{j}.txt").read_text(encoding="utf-8")
                      for j in range(1, nj + 1) if (out / f"skipped.{j}.txt").is_file())
    atomic_write_text(out / "skipped.txt", "".join(sorted(skipped.splitlines(keepends=True))))
    logger.info("combined %d jobs: %s utterances in %s", nj, f"{len(merged):,}", out / "units")
    return len(merged)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats_scp", help="dumped encoder features; not needed with --combine")
    p.add_argument("--kmeans", help="k-means model from train_kmeans; not needed with --combine")
    p.add_argument("--out_dir", required=True)
    add_job_arguments(p)
    p.add_argument("--device", default="cpu")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if args.combine is not None:
        combine_units_jobs(args.out_dir, args.combine)
        return 0
    check_job_arguments(parser, args, required=("feats_scp", "kmeans"))
    if not Path(args.kmeans).is_file():
        raise FileNotFoundError(f"k-means model {args.kmeans} not found")
    dump_units_job(args.feats_scp, KMeans.load(args.kmeans, device=args.device), args.out_dir, args.nj, args.job)
    if args.nj == 1:
        combine_units_jobs(args.out_dir, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
