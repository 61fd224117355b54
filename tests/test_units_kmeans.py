"""Discrete units: mini-batch k-means (seeded, k-means++), save/load, dedup, train_kmeans/dump_units CLIs."""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from speechllm.bin import dump_units, train_kmeans
from speechllm.units import KMeans, dedup_units, read_units, write_units


def blobs(n_per: int = 200, k: int = 5, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight Gaussian blobs far apart; returns (points, true labels)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 20, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (means[labels] + rng.normal(0, 0.5, size=(k * n_per, dim))).astype(np.float32), labels


def test_same_seed_same_assignments_other_seed_other_run():
    x, _ = blobs(k=8)
    a = KMeans(20, batch_size=256, seed=3).fit(x)
    b = KMeans(20, batch_size=256, seed=3).fit(x)
    c = KMeans(20, batch_size=256, seed=4).fit(x)
    torch.testing.assert_close(a.centers, b.centers)
    assert torch.equal(a.predict(x), b.predict(x))
    assert not torch.equal(a.centers, c.centers)


def test_recovers_well_separated_clusters():
    x, labels = blobs(k=6)
    pred = KMeans(6, batch_size=300, seed=0).fit(x).predict(x).numpy()
    # every true cluster maps to exactly one predicted cluster and vice versa (purity 1)
    pairs = {(int(t), int(p)) for t, p in zip(labels, pred)}
    assert len(pairs) == 6 and len({p for _, p in pairs}) == 6


def test_inertia_and_score_agree_with_the_nearest_center_distance():
    x, _ = blobs(k=4)
    km = KMeans(4, seed=0).fit(x)
    d = ((x[:, None, :] - km.centers.numpy()[None]) ** 2).sum(-1)
    assert km.inertia == pytest.approx(d.min(1).mean(), rel=1e-4)
    assert km.inertia < 8 * 0.5**2 * 1.5  # about dim * sigma^2 for tight blobs
    assert torch.equal(km.predict(x), torch.from_numpy(d.argmin(1)))


def test_save_load_round_trip(tmp_path: Path):
    x, _ = blobs(k=3)
    km = KMeans(3, seed=1).fit(x)
    km.meta = {"layer": 9}
    km.save(tmp_path / "km.pt")
    back = KMeans.load(tmp_path / "km.pt")
    torch.testing.assert_close(back.centers, km.centers)
    assert torch.equal(back.predict(x), km.predict(x))
    assert back.meta == {"layer": 9} and back.num_clusters == 3 and back.inertia == km.inertia
    assert (tmp_path / "km.pt").stat().st_size < 10_000


def test_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="needs at least 5 points, got 3"):
        KMeans(5).fit(np.zeros((3, 2), np.float32))
    km = KMeans(2).fit(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 3, k-means centers have 4"):
        km.predict(np.zeros((2, 3), np.float32))
    torch.save({"centers": torch.zeros(2, 2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a k-means model"):
        KMeans.load(tmp_path / "x.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fit_matches_cpu_on_separated_clusters():
    x, _ = blobs(k=5)
    cpu = KMeans(5, seed=0).fit(x).predict(x)
    gpu = KMeans(5, seed=0, device="cuda").fit(x).predict(x)
    assert torch.equal(cpu, gpu)


def test_dedup_removes_consecutive_repeats_only():
    assert dedup_units([5, 5, 5, 9, 9, 5, 1]) == [5, 9, 5, 1]
    assert dedup_units([]) == [] and dedup_units([3]) == [3] and dedup_units([2, 2]) == [2]


def test_units_file_round_trip(tmp_path: Path):
    write_units(tmp_path / "units", {"b": [3, 1], "a": [], "c": [7]})
    assert (tmp_path / "units").read_text() == "a\nb 3 1\nc 7\n"
    assert read_units(tmp_path / "units") == {"a": [], "b": [3, 1], "c": [7]}


@pytest.fixture
def feats_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A dumped-features dir: 6 utterances whose frames come from 4 blobs, in runs."""
    x, labels = blobs(n_per=60, k=4, dim=6)
    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(np.where(labels == k)[0]) for k in range(4)])
    mats = {f"utt{i}": x[order[i * 40 : (i + 1) * 40]] for i in range(6)}  # runs of one blob
    d = tmp_path / "dump"
    d.mkdir()
    kaldiio.save_ark(str(d / "feats.ark"), mats, scp=str(d / "feats.scp"))
    (d / "dump_info.yaml").write_text(yaml.safe_dump({"encoder": "hubert", "layer": 9, "dim": 6}))
    return d, mats


def test_train_kmeans_and_dump_units_clis(feats_dir, tmp_path: Path):
    d, mats = feats_dir
    km_path = tmp_path / "km" / "kmeans.pt"
    rc = train_kmeans.main(["--feats_scp", str(d / "feats.scp"), "--out", str(km_path), "--num_clusters", "4",
                            "--subset_utts", "5", "--seed", "0", "--batch_size", "64", "--device", "cpu"])
    assert rc == 0
    km = KMeans.load(km_path)
    assert km.meta["dump_info"]["layer"] == 9 and km.meta["num_utts"] == 5
    out = tmp_path / "units"
    for job in (1, 2):
        assert dump_units.main(["--feats_scp", str(d / "feats.scp"), "--kmeans", str(km_path), "--out_dir", str(out),
                                "--nj", "2", "--job", str(job)]) == 0
    assert dump_units.main(["--out_dir", str(out), "--combine", "2"]) == 0
    units, dedup = read_units(out / "units"), read_units(out / "units_dedup")
    assert sorted(units) == sorted(mats)
    for utt, mat in mats.items():
        assert units[utt] == km.predict(mat).tolist() and len(units[utt]) == mat.shape[0]
        assert dedup[utt] == dedup_units(units[utt])
    assert dedup["utt0"] == [units["utt0"][0]]  # a run of one blob collapses to one unit


def test_dump_units_rejects_features_of_another_dimension(feats_dir, tmp_path: Path, capsys):
    d, _ = feats_dir
    KMeans(2).fit(np.eye(3, dtype=np.float32)).save(tmp_path / "km.pt")
    rc = dump_units.main(["--feats_scp", str(d / "feats.scp"), "--kmeans", str(tmp_path / "km.pt"),
                          "--out_dir", str(tmp_path / "u")])
    assert rc == 1 and "features of dimension 6, k-means centers have 3" in capsys.readouterr().err
