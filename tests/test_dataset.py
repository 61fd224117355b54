"""ASRDataset over feats.scp + text, and collate_asr's batch contract."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from speechllm.data.dataset import IGNORE_ID, ASRDataset, collate_asr

from conftest import write_lines


class CharCodes:
    """A stand-in tokenizer: one id per character."""

    def encode(self, text: str) -> list[int]:
        return [2 + ord(c) % 50 for c in text]


@pytest.fixture
def feats_dir(tmp_path: Path) -> Path:
    """Data dir with 3 utterances in feats.scp (lengths 7, 12, 5) and text for u1, u2, u4."""
    d = tmp_path / "d"
    d.mkdir()
    rng = np.random.default_rng(0)
    mats = {u: rng.standard_normal((n, 4)).astype(np.float32) for u, n in (("u1", 7), ("u2", 12), ("u3", 5))}
    kaldiio.save_ark(str(d / "feats.ark"), mats, scp=str(d / "feats.scp"))
    write_lines(d / "text", ["u1 ab", "u2 hello", "u4 not in feats"])
    return d


def test_items_hold_features_and_token_ids(feats_dir: Path):
    ds = ASRDataset(feats_dir, CharCodes())
    assert ds.utt_ids == ["u1", "u2"] and len(ds) == 2
    item = ds[1]
    assert item["utt_id"] == "u2"
    assert item["feats"].dtype == torch.float32 and item["feats"].shape == (12, 4)
    assert item["ys"].dtype == torch.long and item["ys"].tolist() == CharCodes().encode("hello")


def test_missing_text_and_missing_features_are_counted_and_logged(feats_dir: Path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = ASRDataset(feats_dir, CharCodes())
    assert ds.num_missing_text == 1 and ds.num_missing_feats == 1
    assert "skipped 2 of 4 utterances (1 in feats.scp without text, 1 in text without features)" in caplog.text


def test_lengths_read_from_shapes_or_utt2num_frames(feats_dir: Path, tmp_path: Path):
    assert ASRDataset(feats_dir, CharCodes()).lengths == [7, 12]
    # utt2num_frames wins when present (here deliberately different to prove it is used)
    write_lines(feats_dir / "utt2num_frames", ["u1 70", "u2 120", "u3 50"])
    assert ASRDataset(feats_dir, CharCodes()).lengths == [70, 120]
    # a feats.scp elsewhere (a dump dir) is used with the utt2num_frames next to it
    dump = tmp_path / "dump"
    dump.mkdir()
    kaldiio.save_ark(str(dump / "f.ark"), {"u1": np.zeros((3, 4), np.float32)}, scp=str(dump / "feats.scp"))
    write_lines(dump / "utt2num_frames", ["u1 3"])
    ds = ASRDataset(feats_dir, CharCodes(), feats_scp=dump / "feats.scp")
    assert ds.utt_ids == ["u1"] and ds.lengths == [3]


def test_collate_pads_feats_with_zero_and_ys_with_ignore_id(feats_dir: Path):
    ds = ASRDataset(feats_dir, CharCodes())
    batch = collate_asr([ds[0], ds[1]])
    assert set(batch) == {"utt_ids", "feats", "feats_lens", "ys", "ys_lens"}
    assert batch["utt_ids"] == ["u1", "u2"]
    assert batch["feats"].shape == (2, 12, 4) and batch["feats"].dtype == torch.float32
    assert batch["feats_lens"].tolist() == [7, 12] and batch["feats_lens"].dtype == torch.long
    assert torch.equal(batch["feats"][0, :7], ds[0]["feats"]) and (batch["feats"][0, 7:] == 0).all()
    assert batch["ys"].shape == (2, 5) and batch["ys_lens"].tolist() == [2, 5]
    assert IGNORE_ID == -1 and batch["ys"][0, 2:].tolist() == [IGNORE_ID] * 3


def test_dataset_pickles_after_reading_for_dataloader_workers(feats_dir: Path):
    ds = ASRDataset(feats_dir, CharCodes())
    first = ds[0]["feats"]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["feats"], first)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_asr)
    assert next(iter(loader))["feats"].shape == (2, 12, 4)
    ds.close()
