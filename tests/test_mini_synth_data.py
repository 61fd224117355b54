"""egs/mini_synth/asr1/local/data.sh in tiny mode: the data dirs a recipe run starts from."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechllm.corpus.tts_voices import HELD_OUT_VOICES
from speechllm.data.datadir import load_data_dir, read_spk2utt, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "mini_synth" / "asr1"
REALSPEECH = ROOT.parent / "shared" / "data" / "realspeech"
REAL_SETS = ("test_real_librivox", "test_real_librispeech", "test_real_ljspeech", "test_real_jfk")
TOOLS = ("bible", "espeak-ng", "festival", "flite", "text2wave", "sox")


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"Debian tools missing: {missing}")
    work = tmp_path_factory.mktemp("mini_synth")
    out = _run(str(RECIPE / "local" / "data.sh"), "--tiny", "true", "--data_dir", "data",
               "--audio_dir", "audio", "--nj", "2", cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    return work, out.stdout + out.stderr


def test_tiny_run_makes_consistent_synthetic_data_dirs(tiny):
    work, _ = tiny
    for split, n in (("train", 16), ("dev", 4), ("test", 4)):
        d = work / "data" / split
        assert validate_data_dir(d, required=("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"),
                                 check_audio=True, expected_sr=16000) == []
        dd = load_data_dir(d)
        assert len(dd.utt_ids) == n
        assert set(dd.wav_scp) == set(dd.text) == set(dd.utt2spk) == set(dd.utt2dur)
        assert all(Path(p).is_absolute() and Path(p).is_relative_to(work / "audio") for p in dd.wav_scp.values())
        assert all(t == t.lower() and t.replace(" ", "").replace("'", "").isalpha() for t in dd.text.values())
        assert read_spk2utt(d / "spk2utt") == {s: sorted(u for u, v in dd.utt2spk.items() if v == s)
                                               for s in set(dd.utt2spk.values())}
        for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
            ids = [line.split()[0] for line in (d / name).read_text().splitlines()]
            assert ids == sorted(ids)
    train_spk = set(load_data_dir(work / "data" / "train").utt2spk.values())
    test_spk = set(load_data_dir(work / "data" / "test").utt2spk.values())
    assert test_spk == set(HELD_OUT_VOICES) and not train_spk & test_spk
    texts = {s: set(load_data_dir(work / "data" / s).text.values()) for s in ("train", "dev", "test")}
    assert not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]


def test_corpus_info_records_sources_versions_and_sizes(tiny):
    work, _ = tiny
    info = yaml.safe_load((work / "data" / "local" / "corpus_info.yaml").read_text())
    assert info["sources"]["debian_packages"]["bible-kjv"] not in ("", "not installed")
    assert "eSpeak NG" in info["sources"]["engine_versions"]["espeak-ng"]
    assert "Festival" in info["sources"]["engine_versions"]["festival"]
    assert info["settings"]["seed"] == 1 and info["settings"]["num_train"] == 16
    assert info["sizes"]["train"]["utterances"] == 16
    assert info["synthesis"]["failed_utterances"] == 0 and info["synthesis"]["wall_s"] >= 0
    assert set(info["voice_split"]["test"]) == set(HELD_OUT_VOICES)
    assert (work / "data" / "local" / "utt_info" / "train.tsv").is_file()


def test_second_run_skips_work_already_done(tiny):
    work, _ = tiny
    before = (work / "data" / "train" / "wav.scp").stat().st_mtime_ns
    out = _run(str(RECIPE / "local" / "data.sh"), "--tiny", "true", "--data_dir", "data",
               "--audio_dir", "audio", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "skip: data/{train,dev,test} already made" in out.stdout + out.stderr
    assert (work / "data" / "train" / "wav.scp").stat().st_mtime_ns == before


@pytest.mark.skipif(not REALSPEECH.is_dir(), reason=f"no real speech at {REALSPEECH}")
def test_real_speech_test_sets_are_made_when_the_shared_folder_exists(tiny):
    work, _ = tiny
    for name in REAL_SETS:
        d = work / "data" / name
        assert validate_data_dir(d, required=("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"),
                                 check_audio=True, expected_sr=16000) == [], name
    jfk = load_data_dir(work / "data" / "test_real_jfk")
    assert list(jfk.text.values()) == [
        "and so my fellow americans ask not what your country can do for you ask what you can do for your country"]
    assert all(e.endswith("|") and " -r 16000 -c 1 " in e for e in jfk.wav_scp.values())  # 44.1 kHz stereo
    assert all(not e.endswith("|") for e in load_data_dir(work / "data" / "test_real_librivox").wav_scp.values())
    assert len(load_data_dir(work / "data" / "test_real_ljspeech").text) == 32


def test_missing_real_speech_folder_is_a_clean_skip(tmp_path):
    out = _run(sys.executable, str(RECIPE / "local" / "prepare_realspeech.py"),
               "--realspeech_dir", str(tmp_path / "absent"), "--data_dir", str(tmp_path / "data"), cwd=tmp_path)
    assert out.returncode == 0
    assert "skip: no real speech at" in out.stderr
    assert not (tmp_path / "data").exists()


def test_lm_text_is_the_kjv_without_the_dev_and_test_verses(tiny):
    work, log = tiny
    lines = (work / "data" / "local" / "lm_train.txt").read_text().splitlines()
    lm_ids = [line.split(" ", 1)[0] for line in lines]
    lm_texts = {line.split(" ", 1)[1] for line in lines}
    assert len(lm_ids) == len(set(lm_ids)) > 30_000 and lm_ids[0] == "Ge001_001"
    for split in ("dev", "test"):
        for utt, text in load_data_dir(work / "data" / split).text.items():
            assert utt.rsplit("-", 1)[1] not in lm_ids and text not in lm_texts, utt
    train_texts = set(load_data_dir(work / "data" / "train").text.values())
    assert train_texts <= lm_texts  # normalized exactly like the transcripts
    info = yaml.safe_load((work / "data" / "local" / "lm_train.txt.info.yaml").read_text())
    assert info["kept"] == len(lines) and info["withheld"] == info["verses"] - len(lines) >= 8
    assert "verses withheld" in log and "skip: data/local/lm_train.txt" not in log


def test_lm_text_withholds_verses_by_id_and_by_transcript(tmp_path):
    bible = tmp_path / "bible"
    (tmp_path / "kjv.txt").write_text("Ge1:1 In the beginning God created the heaven and the earth.\n"
                                      "Ge1:2 And the earth was without form, and void.\n"
                                      "Psa23:1 The LORD is my shepherd; I shall not want.\n"
                                      "John11:35 Jesus wept.\n")
    bible.write_text(f"#!/bin/sh\ncat '{tmp_path / 'kjv.txt'}'\n")
    bible.chmod(0o755)
    (tmp_path / "dev_text").write_text("espeak_x-Psa023_001 the lord is my shepherd i shall not want\n")
    (tmp_path / "test_text").write_text("real-0001 jesus wept\n")
    cmd = [sys.executable, str(RECIPE / "local" / "make_lm_text.py"), "--bible_cmd", str(bible),
           "--exclude", "dev_text", "test_text", "--out", "lm/lm_train.txt"]
    out = _run(*cmd, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lm" / "lm_train.txt").read_text() == (
        "Ge001_001 in the beginning god created the heaven and the earth\n"
        "Ge001_002 and the earth was without form and void\n")
    assert "wrote lm/lm_train.txt: 2 of 4 KJV verses" in out.stderr
    assert "test_text: 1 verses withheld (1 of 1 lines matched a verse)" in out.stderr
    again = _run(*cmd, cwd=tmp_path)
    assert "skip: lm/lm_train.txt already made" in again.stderr
