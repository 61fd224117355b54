"""Train k-means on dumped encoder features: the codebook of discrete speech units.

Reads a random subset of ``--subset_utts`` utterances (seeded) of ``--feats_scp`` — one layer of
an SSL encoder written by ``dump_encoder_features``; the layer is chosen there and recorded in
its ``dump_info.yaml``, which is copied into the model's metadata — keeps at most
``--max_frames`` of their frames (a random sample), and fits mini-batch k-means
(:class:`speechllm.units.KMeans`, k-means++ initialization) on them.

Example::

    python -m speechllm.bin.train_kmeans --feats_scp dump/hubert_l9/train/feats.scp \
        --out dump/hubert_l9/kmeans100.pt --num_clusters 100 --subset_utts 2000 --seed 0
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import kaldiio
import numpy as np
import torch

from speechllm.bin import exit_on_user_error
from speechllm.data.datadir import DataDirError, read_feats_scp
from speechllm.units.kmeans import KMeans
from speechllm.utils.config import load_yaml
from speechllm.utils.logging_utils import setup_logging

logger = logging.getLogger(__name__)


def load_subset(feats_scp: str | Path, subset_utts: int | None, max_frames: int | None,
                seed: int) -> tuple[np.ndarray, list[str]]:
    """Frames ``[N, D]`` (float32) of a seeded random subset of utterances, and their ids."""
    feats = read_feats_scp(feats_scp)
    if not feats:
        raise DataDirError(feats_scp, None, "no utterances")
    rng = np.random.default_rng(seed)
    utts = sorted(feats)
    if subset_utts is not None and subset_utts < len(utts):
        pick = rng.choice(len(utts), size=subset_utts, replace=False)
        utts = [utts[i] for i in sorted(pick)]  # id order: sequential reads of each ark
    mats = [np.asarray(kaldiio.load_mat(feats[u]), dtype=np.float32) for u in utts]
    dims = {m.shape[1] for m in mats if m.ndim == 2}
    if len(dims) != 1 or any(m.ndim != 2 for m in mats):
        raise DataDirError(feats_scp, None, f"expected matrices of one dimension, got dimensions {sorted(dims)}")
    x = np.concatenate(mats)
    if max_frames is not None and x.shape[0] > max_frames:
        x = x[np.sort(rng.choice(x.shape[0], size=max_frames, replace=False))]
    logger.info("k-means data: %s frames of %s of %s utterances (dim %d)",
                f"{x.shape[0]:,}", f"{len(utts):,}", f"{len(feats):,}", x.shape[1])
    return x, utts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feats_scp", required=True, help="dumped encoder features (dump_encoder_features)")
    p.add_argument("--out", required=True, help="k-means model file to write (e.g. kmeans100.pt)")
    p.add_argument("--num_clusters", type=int, required=True)
    p.add_argument("--subset_utts", type=int, default=None, help="random utterances to train on (default all)")
    p.add_argument("--max_frames", type=int, default=500000, help="at most this many frames (a random sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=10000, help="points per mini-batch step")
    p.add_argument("--max_iter", type=int, default=300, help="maximum mini-batch steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    x, utts = load_subset(args.feats_scp, args.subset_utts, args.max_frames, args.seed)
    if x.shape[0] < args.num_clusters:
        raise DataDirError(args.feats_scp, None, f"{x.shape[0]:,} frames are fewer than --num_clusters {args.num_clusters}")
    km = KMeans(args.num_clusters, batch_size=args.batch_size, max_iter=args.max_iter, seed=args.seed, device=args.device)
    km.fit(x)
    info_path = Path(args.feats_scp).parent / "dump_info.yaml"
    km.meta = {"feats_scp": str(args.feats_scp), "num_utts": len(utts), "num_frames": int(x.shape[0]),
               "dump_info": load_yaml(info_path) if info_path.is_file() else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    km.save(args.out)
    logger.info("wrote %s: %d clusters, inertia %.4g", args.out, args.num_clusters, km.inertia)
    return 0


if __name__ == "__main__":
    sys.exit(main())
