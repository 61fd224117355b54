"""Global CMVN: stats equal numpy's mean/std; normalisation leaves padding at zero."""
from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from speechllm.data.datadir import DataDirError
from speechllm.features.cmvn import GlobalCMVN, accumulate_cmvn_stats, compute_cmvn_stats, load_cmvn_stats


@pytest.fixture
def feats_scp(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    mats = {f"u{i}": (rng.standard_normal((20 + 7 * i, 5)) * [1, 2, 3, 4, 5] + [10, 0, -3, 1, 2]).astype(np.float32)
            for i in range(3)}
    scp = tmp_path / "feats.scp"
    kaldiio.save_ark(str(tmp_path / "feats.ark"), mats, scp=str(scp))
    return scp, np.concatenate(list(mats.values()))


def test_stats_equal_numpy_mean_and_std(feats_scp, tmp_path: Path):
    scp, frames = feats_scp
    stats = compute_cmvn_stats(scp, tmp_path / "cmvn.json")
    assert set(json.loads((tmp_path / "cmvn.json").read_text())) == {"count", "sum", "sum_sq"}
    assert stats["count"] == frames.shape[0]
    mean, std = load_cmvn_stats(tmp_path / "cmvn.json")
    np.testing.assert_allclose(mean, frames.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, frames.astype(np.float64).std(axis=0), rtol=1e-5)


def test_normalised_frames_have_zero_mean_unit_std_and_padding_stays_zero(feats_scp, tmp_path: Path):
    scp, frames = feats_scp
    compute_cmvn_stats(scp, tmp_path / "cmvn.json")
    cmvn = GlobalCMVN.from_stats_file(tmp_path / "cmvn.json")
    x = torch.zeros(2, frames.shape[0], 5)
    x[0] = torch.from_numpy(frames)
    x[1, :10] = torch.from_numpy(frames[:10])
    y = cmvn(x, torch.tensor([frames.shape[0], 10]))
    torch.testing.assert_close(y[0].mean(0), torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(y[0].std(0, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    assert torch.equal(y[1, 10:], torch.zeros_like(y[1, 10:]))


def test_utterance_mean_removes_each_utterances_offset_and_keeps_padding_zero():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 3)
    tilted = x.clone()
    tilted[1, :7] += torch.tensor([5.0, -2.0, 0.5])  # a constant offset (channel/spectral tilt)
    lengths = torch.tensor([12, 7])
    cmvn = GlobalCMVN(np.zeros(3), np.full(3, 2.0), utterance_mean=True)
    y, y_tilted = cmvn(x, lengths), cmvn(tilted, lengths)
    torch.testing.assert_close(y[1, :7].mean(0), torch.zeros(3), atol=1e-6, rtol=0)  # over valid frames only
    torch.testing.assert_close(y_tilted, y)  # the offset is gone
    assert torch.equal(y[1, 7:], torch.zeros_like(y[1, 7:]))
    torch.testing.assert_close(y[0, :, 0].std(unbiased=False), (x[0, :, 0] / 2).std(unbiased=False))  # global scale kept
    # without lengths: every frame is valid
    torch.testing.assert_close(cmvn(x[:1]), y[:1])


def test_mean_and_istd_are_buffers_in_state_dict():
    cmvn = GlobalCMVN(np.zeros(3), np.full(3, 2.0))
    assert set(cmvn.state_dict()) == {"mean", "istd"}
    torch.testing.assert_close(cmvn.istd, torch.full((3,), 0.5))


def test_constant_dimension_does_not_blow_up(tmp_path: Path):
    kaldiio.save_ark(str(tmp_path / "f.ark"), {"u": np.ones((4, 2), dtype=np.float32)}, scp=str(tmp_path / "f.scp"))
    compute_cmvn_stats(tmp_path / "f.scp", tmp_path / "c.json")
    mean, std = load_cmvn_stats(tmp_path / "c.json")
    y = GlobalCMVN(mean, std)(torch.ones(1, 4, 2))
    assert torch.isfinite(y).all()


def test_unreadable_matrix_names_the_scp_line(tmp_path: Path):
    (tmp_path / "feats.scp").write_text(f"u1 {tmp_path}/missing.ark:12\n")
    with pytest.raises(DataDirError, match=r"feats.scp:1: 'u1': cannot read"):
        accumulate_cmvn_stats(tmp_path / "feats.scp")


def test_compute_cmvn_cli(feats_scp, tmp_path: Path):
    from speechllm.bin.compute_cmvn import main

    scp, frames = feats_scp
    assert main([str(scp), str(tmp_path / "stats.json")]) == 0
    assert json.loads((tmp_path / "stats.json").read_text())["count"] == frames.shape[0]
