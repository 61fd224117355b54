"""ASR datasets over a data dir: token ids from ``text`` plus either features or raw audio.

* :class:`ASRDataset`: matrices ``[T, D]`` from ``feats.scp`` (kaldiio): fbank, or encoder
  features dumped by ``dump_encoder_features``. ``lengths`` are frames.
* :class:`RawAudioDataset`: waveforms ``[S]`` from ``wav.scp`` (+ ``segments``), for encoders
  that take audio in the graph. ``lengths`` are samples; ``length_per_bin`` (samples per
  10 ms) lets the Trainer count ``batch_bins`` in 10 ms frames for both kinds.

Items are read lazily, one random access per item, so a dataset costs only its index in
memory. Utterances that have audio/features but no transcript (or the reverse) are left
out, counted and logged. :func:`collate_asr` pads either kind into the batch contract.
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

from speechllm.data.audio import AudioError, compute_utt2dur
from speechllm.data.datadir import (
    DataDirAudio,
    DataDirError,
    read_feats_scp,
    read_text,
    read_utt2dur,
    read_utt2num_frames,
)

logger = logging.getLogger(__name__)

# Padding value of target sequences in a batch: losses ignore it (``ignore_index=-1``).
IGNORE_ID = -1


class TextEncoder(Protocol):
    """What the dataset needs from a tokenizer (``speechllm.text.tokenizer.Tokenizer``)."""

    def encode(self, text: str) -> list[int]: ...


class ASRDataset(Dataset):
    """Items ``{"utt_id": str, "feats": FloatTensor[T, D], "text": str, "ys": LongTensor[L]}``.

    Args:
        data_dir: a data dir with ``text`` (and ``feats.scp`` unless ``feats_scp`` is given).
        tokenizer: anything with ``encode(text) -> list[int]``; None: items have no ``ys`` (a
            model that tokenizes the text itself, e.g. the speech LLM).
        feats_scp: features to use instead of ``data_dir/feats.scp`` (e.g. a dump dir).

    Attributes:
        utt_ids: sorted utterance ids (those with both features and text).
        lengths: frames per utterance, aligned with ``utt_ids``; from ``utt2num_frames``
            next to ``feats.scp`` or in ``data_dir`` when present, else read from the
            matrices' headers (slower). Used by the length-bucketed sampler.
        num_missing_text, num_missing_feats: utterances left out, and why.
    """

    def __init__(self, data_dir: str | os.PathLike, tokenizer: TextEncoder | None,
                 feats_scp: str | os.PathLike | None = None):
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
        item = {
            "utt_id": self.utt_ids[index],
            # kaldiio gives a read-only view of its buffer: copy so the tensor owns writable memory
            "feats": torch.from_numpy(np.array(mat, dtype=np.float32)),
            "text": self._texts[index],
        }
        if self.tokenizer is not None:
            item["ys"] = torch.tensor(self.tokenizer.encode(self._texts[index]), dtype=torch.long)
        return item

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


class RawAudioDataset(Dataset):
    """Items ``{"utt_id": str, "feats": FloatTensor[S], "text": str, "ys": LongTensor[L]}``: 16 kHz (or
    ``sample_rate``) mono samples in [-1, 1] read with :func:`speechllm.data.audio.load_audio`.

    Args:
        data_dir: a data dir with ``wav.scp`` (+ ``segments``), ``text`` and ideally ``utt2dur``.
        tokenizer: anything with ``encode(text) -> list[int]``; None: items have no ``ys``.
        sample_rate: the rate the encoder expects; audio at another rate is an error when read
            (no silent resampling).

    Attributes:
        utt_ids: sorted utterance ids (those with both audio and text).
        lengths: samples per utterance, ``round(utt2dur * sample_rate)``; without ``utt2dur``
            the durations are measured (segment bounds, or audio headers). Used for bucketing
            only, so a rounding difference to the decoded length does not matter.
        length_per_bin: samples per 10 ms frame: ``batch_bins`` counts 10 ms frames for raw
            audio as for fbank, so one ``batch_bins`` value means the same seconds per batch.
        num_missing_text, num_missing_audio: utterances left out, and why.
    """

    FRAME_SHIFT_S = 0.01

    def __init__(self, data_dir: str | os.PathLike, tokenizer: TextEncoder | None, sample_rate: int = 16000):
        data_dir = Path(data_dir)
        self.tokenizer = tokenizer
        self.sample_rate = int(sample_rate)
        self.length_per_bin = max(1, round(self.sample_rate * self.FRAME_SHIFT_S))
        self.audio = DataDirAudio(data_dir, expected_sr=self.sample_rate)
        have_audio = set(self.audio.utt_ids())
        text = read_text(data_dir / "text")
        self.utt_ids = sorted(have_audio & set(text))
        self.num_missing_text = len(have_audio - set(text))
        self.num_missing_audio = len(set(text) - have_audio)
        if self.num_missing_text or self.num_missing_audio:
            logger.warning(
                "%s: skipped %s of %s utterances (%s with audio but no text, %s in text without audio)",
                data_dir, f"{self.num_missing_text + self.num_missing_audio:,}", f"{len(have_audio | set(text)):,}",
                f"{self.num_missing_text:,}", f"{self.num_missing_audio:,}",
            )
        if not self.utt_ids:
            raise DataDirError(data_dir / "wav.scp", None, f"no utterance has both audio and text in {data_dir / 'text'}")
        self._texts = [text[u] for u in self.utt_ids]
        self.lengths = [max(1, round(d * self.sample_rate)) for d in self._durations(data_dir)]

    def _durations(self, data_dir: Path) -> list[float]:
        path = data_dir / "utt2dur"
        if path.is_file():
            durs = read_utt2dur(path)
            missing = [u for u in self.utt_ids if u not in durs]
            if not missing:
                return [durs[u] for u in self.utt_ids]
            logger.warning("%s lacks %s utterances (e.g. '%s'); measuring the audio instead",
                           path, f"{len(missing):,}", missing[0])
        logger.info("no usable utt2dur: measuring %s utterances", f"{len(self.utt_ids):,}")
        wav = {rec: entry for rec, (_, entry) in self.audio.wav.items()}
        durs, failures = compute_utt2dur(wav, self.audio.segments)
        bad = [u for u in self.utt_ids if u in failures or u not in durs]
        if bad:
            why = failures.get(bad[0], "not in wav.scp")
            raise DataDirError(path.parent / "wav.scp", None, f"cannot measure '{bad[0]}': {why}")
        return [durs[u] for u in self.utt_ids]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, index: int) -> dict:
        utt = self.utt_ids[index]
        try:
            wave, _ = self.audio.load(utt)
        except AudioError as e:  # name the wav.scp line: the DataLoader traceback would not
            raise AudioError(f"{self.audio.where(utt)}: {e}") from None
        item = {"utt_id": utt, "feats": torch.from_numpy(wave), "text": self._texts[index]}
        if self.tokenizer is not None:
            item["ys"] = torch.tensor(self.tokenizer.encode(self._texts[index]), dtype=torch.long)
        return item


def pad_sequences(seqs: Sequence[torch.Tensor], value: float = 0.0,
                  dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors along their first axis: ``[N_i, *rest]`` -> ``([B, max N, *rest], lengths[B])``.

    Works for feature matrices ``[T, D]``, waveforms ``[S]`` and token ids ``[L]`` alike.
    """
    lens = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max()), *seqs[0].shape[1:]), value, dtype=dtype or seqs[0].dtype)
    for b, s in enumerate(seqs):
        out[b, : s.shape[0]] = s
    return out, lens


def collate_asr(items: Sequence[dict]) -> dict:
    """Batch dataset items (order kept) into the batch contract of docs/architecture.md.

    Returns:
        ``{"utt_ids": list[str], "feats": FloatTensor[B, T, D]`` (zero padded; ``[B, S]`` for
        raw-audio items), ``"feats_lens": LongTensor[B], "ys": LongTensor[B, L]`` (padded
        with ``IGNORE_ID``), ``"ys_lens": LongTensor[B]}``.
    """
    if not items:
        raise ValueError("collate_asr: empty batch")
    feats, feats_lens = pad_sequences([it["feats"] for it in items], 0.0, torch.float32)
    ys, ys_lens = pad_sequences([it["ys"] for it in items], IGNORE_ID, torch.long)
    return {
        "utt_ids": [it["utt_id"] for it in items],
        "feats": feats,
        "feats_lens": feats_lens,
        "ys": ys,
        "ys_lens": ys_lens,
    }
