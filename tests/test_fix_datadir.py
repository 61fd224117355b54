"""fix_data_dir (sort, intersect, filter with counts and a dropped list), combine, subset, split."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from speechllm.data.datadir import DataDirError, load_data_dir, read_utt2dur, validate_data_dir
from speechllm.data.fix_datadir import combine_data_dirs, fix_data_dir, share_of, split_data_dir, subset_data_dir

from conftest import write_lines


def dropped_list(d: Path) -> dict[str, str]:
    lines = (d / ".backup" / "dropped.txt").read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines)


def test_fix_sorts_unsorted_files(data_dir: Path):
    lines = (data_dir / "text").read_text().splitlines()
    write_lines(data_dir / "text", lines[::-1])
    assert validate_data_dir(data_dir) != []
    report = fix_data_dir(data_dir)
    assert report.num_kept == 4 and report.dropped == {}
    assert validate_data_dir(data_dir) == []


def test_fix_intersects_ids_and_lists_reasons(data_dir: Path, caplog):
    lines = (data_dir / "text").read_text().splitlines()
    write_lines(data_dir / "text", lines[1:])  # spkA-utt1 has no text
    write_lines(data_dir / "utt2spk", ["spkA-utt1 spkA", "spkA-utt2 spkA", "spkB-utt1 spkB"])  # spkB-utt2 no speaker
    with caplog.at_level(logging.INFO):
        report = fix_data_dir(data_dir)
    assert report.num_input == 4 and report.num_kept == 2
    assert dropped_list(data_dir) == {"spkA-utt1": "not in text", "spkB-utt2": "not in utt2spk"}
    assert "intersect ids: kept 2 of 4 utterances (1 not in text, 1 not in utt2spk)" in caplog.text
    assert sorted(load_data_dir(data_dir).wav_scp) == ["spkA-utt2", "spkB-utt1"]
    assert validate_data_dir(data_dir) == []
    assert (data_dir / ".backup" / "text").read_text().count("\n") == 3  # originals kept


def test_fix_filters_duration_and_empty_text_with_counts(data_dir: Path, caplog):
    write_lines(data_dir / "text", ["spkA-utt1 hello", "spkA-utt2", "spkB-utt1 a", "spkB-utt2 b"])
    with caplog.at_level(logging.INFO):
        report = fix_data_dir(data_dir, min_dur=0.6, max_dur=1.2)
    # durations 0.5, 1.0, 1.5, 0.8 s: utt1 too short, utt2 empty, spkB-utt1 too long
    assert report.num_kept == 1
    assert dropped_list(data_dir) == {"spkA-utt1": "< 0.6 s", "spkA-utt2": "empty text", "spkB-utt1": "> 1.2 s"}
    assert "filter: kept 1 of 4 utterances (1 > 1.2 s, 1 < 0.6 s, 1 empty text)" in caplog.text
    # utt2dur was computed (no utt2dur before) and written for the kept utterance
    assert read_utt2dur(data_dir / "utt2dur") == {"spkB-utt2": pytest.approx(0.8)}


def test_fix_drops_unreadable_audio_with_message(data_dir: Path, tmp_path: Path):
    (tmp_path / "wav" / "spkB-utt1.wav").write_bytes(b"not audio")
    report = fix_data_dir(data_dir, max_dur=10.0)
    assert report.num_kept == 3
    assert report.dropped["spkB-utt1"].startswith("unreadable audio: cannot read audio")


def test_fix_uses_segment_times_and_drops_unused_recordings(segments_dir: Path, make_wav):
    wav2 = make_wav("rec2.wav", 1.0)
    write_lines(segments_dir / "wav.scp", [(segments_dir / "wav.scp").read_text().strip(), f"rec2 {wav2}"])
    report = fix_data_dir(segments_dir, max_dur=1.4)
    assert report.dropped == {"rec1-b": "> 1.4 s"}
    assert sorted(load_data_dir(segments_dir).wav_scp) == ["rec1"]


def test_combine_then_subset_and_split(data_dir: Path, segments_dir: Path, tmp_path: Path):
    combined = combine_data_dirs([data_dir, segments_dir], tmp_path / "all")
    # the dir without segments got whole-recording segments
    assert combined.segments["spkA-utt1"].rec_id == "spkA-utt1"
    assert combined.segments["spkA-utt1"].end == pytest.approx(0.5)
    assert len(combined.utt_ids) == 6 and validate_data_dir(tmp_path / "all") == []

    kept = subset_data_dir(tmp_path / "all", tmp_path / "first2", first=2)
    assert kept == ["rec1-a", "rec1-b"] and load_data_dir(tmp_path / "first2").utt_ids == kept
    kept = subset_data_dir(tmp_path / "all", tmp_path / "pick", ids=["spkB-utt2", "nope"])
    assert kept == ["spkB-utt2"] and sorted(load_data_dir(tmp_path / "pick").wav_scp) == ["spkB-utt2"]

    parts = split_data_dir(tmp_path / "all", 4)
    assert parts == [tmp_path / "all" / "split4" / str(j) for j in range(1, 5)]
    ids = [load_data_dir(p).utt_ids for p in parts]
    assert [len(x) for x in ids] == [1, 2, 1, 2]
    assert sum(ids, []) == combined.utt_ids
    assert all(validate_data_dir(p) == [] for p in parts)
    assert split_data_dir(tmp_path / "all", 4) == parts  # up to date: reused


def test_combine_refuses_duplicate_utterance_ids(data_dir: Path, tmp_path: Path):
    with pytest.raises(DataDirError, match="id 'spkA-utt1' is also in"):
        combine_data_dirs([data_dir, data_dir], tmp_path / "dup")


def test_split_into_more_jobs_than_utterances_is_an_error(data_dir: Path):
    with pytest.raises(DataDirError, match="cannot split 4 utterances into 5 jobs"):
        split_data_dir(data_dir, 5)


def test_shares_cover_ids_once_and_differ_by_at_most_one():
    ids = [f"u{i:02d}" for i in range(10)]
    shares = [share_of(ids, 3, j) for j in (1, 2, 3)]
    assert sum(shares, []) == ids and sorted(map(len, shares)) == [3, 3, 4]


def test_fix_cli_exits_1_with_message_on_bad_line(data_dir: Path, capsys):
    from speechllm.bin.fix_data_dir import main

    write_lines(data_dir / "utt2spk", ["spkA-utt1"])
    assert main([str(data_dir)]) == 1
    assert capsys.readouterr().err.strip() == f"fix_data_dir: {data_dir / 'utt2spk'}:1: 'spkA-utt1': expected 2 fields, got 1"


def test_combine_and_subset_cli(data_dir: Path, segments_dir: Path, tmp_path: Path):
    from speechllm.bin.combine_data import main as combine_main
    from speechllm.bin.subset_data_dir import main as subset_main

    assert combine_main([str(tmp_path / "all"), str(data_dir), str(segments_dir)]) == 0
    (tmp_path / "ids").write_text("spkA-utt2\nrec1-b\n")
    assert subset_main([str(tmp_path / "all"), str(tmp_path / "sub"), "--utt_list", str(tmp_path / "ids")]) == 0
    assert load_data_dir(tmp_path / "sub").utt_ids == ["rec1-b", "spkA-utt2"]
    assert subset_main([str(tmp_path / "all"), str(tmp_path / "first"), "--first", "3"]) == 0
    assert len(load_data_dir(tmp_path / "first").utt_ids) == 3
