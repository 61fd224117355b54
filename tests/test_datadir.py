"""Kaldi data dirs: parsing errors name file and line; the validator reports every problem."""
from __future__ import annotations

from pathlib import Path

import pytest

from speechllm.data.datadir import (
    DataDirError,
    Segment,
    load_data_dir,
    read_segments,
    read_spk2utt,
    read_text,
    read_utt2spk,
    read_wav_scp,
    validate_data_dir,
    write_data_dir,
    write_segments,
)

from conftest import write_lines


def test_wav_scp_keeps_pipe_entries_whole(tmp_path: Path):
    write_lines(tmp_path / "wav.scp", ["a /x/a.wav", "b sox /x/b.flac -t wav - |"])
    assert read_wav_scp(tmp_path / "wav.scp") == {"a": "/x/a.wav", "b": "sox /x/b.flac -t wav - |"}


def test_text_allows_empty_transcript_and_normalises_spaces(tmp_path: Path):
    write_lines(tmp_path / "text", ["u1  hello   world ", "u2"])
    assert read_text(tmp_path / "text") == {"u1": "hello world", "u2": ""}


def test_missing_field_names_file_and_line(tmp_path: Path):
    write_lines(tmp_path / "utt2spk", ["u1 s1", "u2"])
    with pytest.raises(DataDirError, match=r"utt2spk:2: 'u2': expected 2 fields, got 1"):
        read_utt2spk(tmp_path / "utt2spk")


def test_segments_with_non_numeric_time_names_line(tmp_path: Path):
    write_lines(tmp_path / "segments", ["u1 r1 0.0 1.0", "u2 r1 1.0 end"])
    with pytest.raises(DataDirError, match=r"segments:2: 'u2': start/end are not numbers"):
        read_segments(tmp_path / "segments")


def test_duplicate_id_names_both_lines(tmp_path: Path):
    write_lines(tmp_path / "text", ["u1 a", "u2 b", "u1 c"])
    with pytest.raises(DataDirError, match=r"text:3: duplicate id 'u1' \(first on line 1\)"):
        read_text(tmp_path / "text")


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path):
    (tmp_path / "text").write_bytes(b"u1 hello\nu2 caf\xe9\n")
    with pytest.raises(DataDirError, match=r"text:2: invalid UTF-8 byte 0xe9 at column 7") as err:
        read_text(tmp_path / "text")
    assert err.value.file.endswith("text") and err.value.line == 2


def test_blank_line_is_an_error(tmp_path: Path):
    write_lines(tmp_path / "utt2spk", ["u1 s1", "", "u2 s1"])
    with pytest.raises(DataDirError, match=r"utt2spk:2: empty line"):
        read_utt2spk(tmp_path / "utt2spk")


def test_missing_file_is_a_datadir_error(tmp_path: Path):
    with pytest.raises(DataDirError, match=r"text: file not found"):
        read_text(tmp_path / "text")


def test_write_then_read_round_trip_sorted(tmp_path: Path, data_dir: Path):
    dd = load_data_dir(data_dir)
    dd.segments = {u: Segment(u, 0.0, 0.25) for u in dd.wav_scp}
    write_data_dir(dd, tmp_path / "copy")
    back = load_data_dir(tmp_path / "copy")
    assert back == dd
    assert read_spk2utt(tmp_path / "copy" / "spk2utt") == {"spkA": ["spkA-utt1", "spkA-utt2"], "spkB": ["spkB-utt1", "spkB-utt2"]}


def test_segment_times_written_without_trailing_zeros(tmp_path: Path):
    write_segments(tmp_path / "segments", {"u": Segment("r", 1.5, 1 / 3)})
    assert (tmp_path / "segments").read_text() == "u r 1.5 0.3333\n"


def test_valid_dir_has_no_problems(data_dir: Path, segments_dir: Path):
    assert validate_data_dir(data_dir) == []
    assert validate_data_dir(segments_dir, check_audio=True, expected_sr=16000) == []


def test_validator_reports_missing_required_file(data_dir: Path):
    (data_dir / "spk2utt").unlink()
    assert validate_data_dir(data_dir) == [f"{data_dir / 'spk2utt'}: required file missing"]


def test_validator_names_ids_that_differ_and_the_file(data_dir: Path):
    lines = (data_dir / "text").read_text().splitlines()
    write_lines(data_dir / "text", lines[:1] + lines[2:] + ["spkC-utt9 extra"])
    problems = validate_data_dir(data_dir)
    assert f"{data_dir / 'text'}:4: utterance 'spkC-utt9' is not in utt2spk" in problems
    assert f"{data_dir / 'utt2spk'}:2: utterance 'spkA-utt2' has no entry in text" in problems


def test_validator_finds_empty_transcript(data_dir: Path):
    write_lines(data_dir / "text", ["spkA-utt1 hello", "spkA-utt2", "spkB-utt1 a", "spkB-utt2 b"])
    assert validate_data_dir(data_dir) == [f"{data_dir / 'text'}:2: empty transcript for 'spkA-utt2'"]


def test_validator_finds_missing_audio(data_dir: Path, tmp_path: Path):
    (tmp_path / "wav" / "spkB-utt1.wav").unlink()
    problems = validate_data_dir(data_dir)
    assert len(problems) == 1
    assert problems[0].startswith(f"{data_dir / 'wav.scp'}:3: audio file not found:")


def test_validator_finds_unsorted_ids(data_dir: Path):
    lines = (data_dir / "utt2spk").read_text().splitlines()
    write_lines(data_dir / "utt2spk", [lines[1], lines[0]] + lines[2:])
    assert validate_data_dir(data_dir) == [
        f"{data_dir / 'utt2spk'}:2: ids not sorted: 'spkA-utt1' comes after 'spkA-utt2' "
        "(run fix_data_dir, or sort with LC_ALL=C sort)"
    ]


def test_validator_collects_every_parse_error_instead_of_stopping(data_dir: Path):
    (data_dir / "text").write_bytes(b"spkA-utt1 a\nspkA-utt2 \xff\nspkB-utt1 c\nspkB-utt1 d\nspkB-utt2 e\n")
    write_lines(data_dir / "utt2spk", ["spkA-utt1 spkA", "spkA-utt2 spkA", "spkB-utt1", "spkB-utt2 spkB"])
    problems = validate_data_dir(data_dir)
    # bad UTF-8 stops reading that file (line 2); the utt2spk error is still reported
    assert any(p.startswith(f"{data_dir / 'text'}:2: invalid UTF-8") for p in problems)
    assert f"{data_dir / 'utt2spk'}:3: 'spkB-utt1': expected 2 fields, got 1" in problems


def test_validator_checks_utt2spk_against_spk2utt(data_dir: Path):
    write_lines(data_dir / "spk2utt", ["spkA spkA-utt1 spkA-utt2 spkB-utt1", "spkB spkB-utt2"])
    problems = validate_data_dir(data_dir)
    assert problems == [
        f"{data_dir / 'spk2utt'}:1: utterance 'spkB-utt1' is under speaker 'spkA' but utt2spk:3 gives 'spkB'"
    ]


def test_validator_checks_segments_recordings_and_times(segments_dir: Path):
    write_lines(segments_dir / "segments", ["rec1-a rec1 1.2 1.0", "rec1-b rec9 1.5 3.0"])
    problems = validate_data_dir(segments_dir)
    assert f"{segments_dir / 'segments'}:1: 'rec1-a': need 0 <= start < end, got 1.2 1.0" in problems
    assert f"{segments_dir / 'segments'}:2: recording 'rec9' of 'rec1-b' is not in wav.scp" in problems


def test_validator_check_audio_reports_rate_and_corrupt_file(data_dir: Path, tmp_path: Path, make_wav):
    make_wav("spkA-utt1.wav", 0.5, sr=8000)
    (tmp_path / "wav" / "spkB-utt2.wav").write_bytes(b"RIFF junk, not a wav")
    problems = validate_data_dir(data_dir, check_audio=True, expected_sr=16000)
    assert len(problems) == 2
    assert problems[0].startswith(f"{data_dir / 'wav.scp'}:1: ") and "sample rate 8000 Hz, expected 16000 Hz" in problems[0]
    assert problems[1].startswith(f"{data_dir / 'wav.scp'}:4: cannot read audio")


def test_validator_check_audio_runs_pipes(data_dir: Path):
    write_lines(data_dir / "wav.scp", [
        f"spkA-utt1 cat {data_dir.parent / 'wav' / 'spkA-utt1.wav'} |",
        "spkA-utt2 false |",
        f"spkB-utt1 {data_dir.parent / 'wav' / 'spkB-utt1.wav'}",
        f"spkB-utt2 {data_dir.parent / 'wav' / 'spkB-utt2.wav'}",
    ])
    problems = validate_data_dir(data_dir, check_audio=True)
    assert len(problems) == 1 and problems[0].startswith(f"{data_dir / 'wav.scp'}:2: pipe failed with exit code 1")


def test_validate_cli_prints_problems_and_exits_1(data_dir: Path, capsys):
    from speechllm.bin.validate_data_dir import main

    assert main([str(data_dir)]) == 0
    write_lines(data_dir / "text", ["spkA-utt1 a", "spkA-utt2 b", "spkB-utt1 c", "spkB-utt2"])
    assert main([str(data_dir)]) == 1
    assert f"{data_dir / 'text'}:4: empty transcript for 'spkB-utt2'" in capsys.readouterr().out
