"""ASR dataset over a data dir: features from ``feats.scp`` (kaldiio) + token ids from ``text``.

Matrices are read lazily, one random access per item, so a dataset over a large
``feats.scp`` costs only its index in memory. Utterances that have features but no
transcript (or a transcript but no features) are left out, counted and logged.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol, Sequence

import kaldiio
import numpy as np
import torch
from torch.utils.data import Dataset

from speechllm.data.datadir import DataDirError, read_feats_scp, read_text, read_utt2num_frames

logger = logging.getLogger(__name__)

# Padding value of target sequences in a batch: losses ignore it (``ignore_index=-1``).
IGNORE_ID = -1


class TextEncoder(Protocol):
    """What the dataset needs from a tokenizer (``speechllm.text.tokenizer.Tokenizer``)."""

    def encode(self, text: str) -> list[int]: ...


class ASRDataset(Dataset):
    """Items ``{"utt_id": str, "feats": FloatTensor[T, D], "ys": LongTensor[L]}``.

    Args:
        data_dir: a data dir with ``text`` (and ``feats.scp`` unless ``feats_scp`` is given).
        tokenizer: anything with ``encode(text) -> list[int]``.
        feats_scp: features to use instead of ``data_dir/feats.scp`` (e.g. a dump dir).

    Attributes:
        utt_ids: sorted utterance ids (those with both features and text).
        lengths: frames per utterance, aligned with ``utt_ids``; from ``utt2num_frames``
            next to ``feats.scp`` or in ``data_dir`` when present, else read from the
            matrices' headers (slower). Used by the length-bucketed sampler.
        num_missing_text, num_missing_feats: utterances left out, and why.
    """

    def __init__(self, data_dir: str | os.PathLike, tokenizer: TextEncoder, feats_scp: str | os.PathLike | None = None):
        data_dir = Path(data_dir)
        feats_scp = Path(feats_scp) if feats_scp is not None else data_dir / "feats.scp"
        self.tokenizer = tokenizer
        feats = read_feats_scp(feats_scp)
        text = read_text(data_dir / "text")
        self.utt_ids = sorted(set(feats) & set(text))
        self.num_missing_text = sum(1 for u in feats if u not in text)
        self.num_missing_feats = sum(1 for u in text if u not in feats)
        if self.num_missing_text or self.num_missing_feats:
            logger.warning(
                "%s: skipped %s of %s utterances (%s in feats.scp without text, %s in text without features)",
                data_dir, f"{self.num_missing_text + self.num_missing_feats:,}", f"{len(set(feats) | set(text)):,}",
                f"{self.num_missing_text:,}", f"{self.num_missing_feats:,}",
            )
        if not self.utt_ids:
            raise DataDirError(feats_scp, None, f"no utterance has both features and text in {data_dir / 'text'}")
        self._rxspecs = [feats[u] for u in self.utt_ids]
        self._texts = [text[u] for u in self.utt_ids]
        self.lengths = self._read_lengths([feats_scp.parent, data_dir])
        self._fd_dict: dict | None = None  # open ark files, per process (see __getstate__)

    def _read_lengths(self, dirs: Sequence[Path]) -> list[int]:
        for d in dirs:
            path = d / "utt2num_frames"
            if path.is_file():
                frames = read_utt2num_frames(path)
                missing = [u for u in self.utt_ids if u not in frames]
                if not missing:
                    return [frames[u] for u in self.utt_ids]
                logger.warning("%s lacks %s utterances (e.g. '%s'); reading shapes instead", path, f"{len(missing):,}", missing[0])
        logger.info("no usable utt2num_frames: reading %s matrix shapes", f"{len(self.utt_ids):,}")
        return [int(kaldiio.load_mat(rx).shape[0]) for rx in self._rxspecs]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> dict:
        if self._fd_dict is None:
            self._fd_dict = {}
        mat = kaldiio.load_mat(self._rxspecs[index], fd_dict=self._fd_dict)
        return {
            "utt_id": self.utt_ids[index],
            # kaldiio gives a read-only view of its buffer: copy so the tensor owns writable memory
            "feats": torch.from_numpy(np.array(mat, dtype=np.float32)),
            "ys": torch.tensor(self.tokenizer.encode(self._texts[index]), dtype=torch.long),
        }

    def __getstate__(self) -> dict:
        # open file handles cannot cross into DataLoader workers; each worker reopens its own
        state = self.__dict__.copy()
        state["_fd_dict"] = None
        return state

    def close(self) -> None:
        """Close the ark files opened by :meth:`__getitem__`."""
        for fd in (self._fd_dict or {}).values():
            fd.close()
        self._fd_dict = None


def collate_asr(items: Sequence[dict]) -> dict:
    """Batch dataset items (order kept) into the batch contract of docs/architecture.md.

    Returns:
        ``{"utt_ids": list[str], "feats": FloatTensor[B, T, D]`` (zero padded),
        ``"feats_lens": LongTensor[B], "ys": LongTensor[B, L]`` (padded with ``IGNORE_ID``),
        ``"ys_lens": LongTensor[B]}``.
    """
    if not items:
        raise ValueError("collate_asr: empty batch")
    feats_lens = torch.tensor([it["feats"].shape[0] for it in items], dtype=torch.long)
    ys_lens = torch.tensor([it["ys"].shape[0] for it in items], dtype=torch.long)
    dim = items[0]["feats"].shape[1]
    feats = torch.zeros(len(items), int(feats_lens.max()), dim, dtype=torch.float32)
    ys = torch.full((len(items), int(ys_lens.max())), IGNORE_ID, dtype=torch.long)
    for b, it in enumerate(items):
        feats[b, : feats_lens[b]] = it["feats"]
        ys[b, : ys_lens[b]] = it["ys"]
    return {
        "utt_ids": [it["utt_id"] for it in items],
        "feats": feats,
        "feats_lens": feats_lens,
        "ys": ys,
        "ys_lens": ys_lens,
    }
