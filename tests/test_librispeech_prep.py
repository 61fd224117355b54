"""LibriSpeech preparation: speechllm.corpus.librispeech, its CLI, and egs/librispeech/sllm1/local/*.sh,
on a tiny corpus in the exact LibriSpeech layout written to a temporary folder (nothing is downloaded)."""
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.bin import prepare_librispeech
from speechllm.corpus.librispeech import (MALFORMED_LINE, NO_AUDIO, NO_GENDER, NO_TRANSCRIPT, is_prepared,
                                          prepare_part, read_speakers)
from speechllm.data.datadir import DataDirError, load_data_dir, read_spk2utt, read_table, parse_one_field, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "librispeech" / "sllm1"
SR = 16000
REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur")

# part -> reader -> chapter -> [(utterance number, seconds, transcript as in trans.txt)]
CORPUS = {
    "dev-clean": {
        "1272": {"128104": [(0, 0.50, "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"),
                            (1, 0.75, "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING")],
                 "135031": [(0, 0.40, "'TIS THE SEASON")]},
        "2412": {"153948": [(0, 0.60, "A SPLENDID FELLOW"), (2, 0.30, "OF COURSE")]},
    },
    "test-clean": {
        "121": {"121726": [(0, 0.45, "ALSO A POPULAR CONTRIVANCE"), (1, 0.55, "HE HOPED THERE WOULD BE STEW")]},
        "1221": {"135766": [(0, 0.35, "HOW STRANGE IT SEEMED")]},
    },
    "train-clean-100": {"19": {"198": [(0, 0.30, "NORTHANGER ABBEY"), (1, 0.40, "THIS LITTLE WORK")]}},
    "train-clean-360": {"14": {"208": [(0, 0.25, "CHAPTER ONE")]}},
}
SPEAKERS_TXT = """\
; Some readers have more than one subset; see the README.
;ID  |SEX| SUBSET           |MINUTES| NAME
14   | F | train-clean-360  | 25.03 | Kristin LeMoine
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
60   | M | train-clean-100  | 20.18 | |CBW|Simon
121  | F | test-clean       | 22.30 | Nicole Lee
1221 | F | test-clean       | 24.00 | Dayle
1272 | M | dev-clean        | 24.96 | John Rose
2412 | F | dev-clean        | 25.02 | Kathy Caver
"""


def utt_id(reader: str, chapter: str, n: int) -> str:
    return f"{reader}-{chapter}-{n:04d}"


def write_corpus(root: Path, parts=tuple(CORPUS), speakers_txt: bool = True) -> Path:
    """The LibriSpeech layout under ``root``; returns ``root`` (the data_root)."""
    base = root / "LibriSpeech"
    for part in parts:
        for i, (reader, chapters) in enumerate(CORPUS[part].items()):
            for chapter, utts in chapters.items():
                d = base / part / reader / chapter
                d.mkdir(parents=True)
                lines = []
                for n, seconds, words in utts:
                    utt = utt_id(reader, chapter, n)
                    t = np.arange(int(round(seconds * SR))) / SR
                    sf.write(d / f"{utt}.flac", 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t), SR, subtype="PCM_16")
                    lines.append(f"{utt} {words}\n")
                (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    if speakers_txt:
        (base / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    return root


def expected(part: str) -> dict[str, tuple[str, float, str]]:
    """utt -> (reader, seconds, raw transcript)."""
    return {utt_id(r, c, n): (r, s, w) for r, chs in CORPUS[part].items() for c, us in chs.items() for n, s, w in us}


def run_sh(*args, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run(["bash", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ls_root"))


# --- Python API -------------------------------------------------------------------------
def test_prepared_part_validates_with_ids_text_speakers_and_durations(corpus, tmp_path):
    report = prepare_part(corpus, "dev-clean", tmp_path / "dev_clean")
    d = tmp_path / "dev_clean"
    assert validate_data_dir(d, required=REQUIRED, check_audio=True, expected_sr=SR) == []
    dd = load_data_dir(d)
    want = expected("dev-clean")
    assert dd.utt_ids == sorted(want) and report.num_utterances == 5 and report.problems == []
    assert report.num_speakers == 2 and report.seconds == pytest.approx(sum(s for _, s, _ in want.values()))
    for utt, (reader, seconds, words) in want.items():
        assert dd.utt2spk[utt] == reader and utt.startswith(reader + "-")
        assert dd.utt2dur[utt] == pytest.approx(seconds, abs=1e-4)
        assert Path(dd.wav_scp[utt]).is_absolute() and dd.wav_scp[utt].endswith(f"/{utt}.flac")
    assert dd.text["1272-128104-0001"] == "nor is mister quilter's manner less interesting"
    assert dd.text["1272-135031-0000"] == "tis the season"  # a leading apostrophe is dropped, as in scoring
    assert report.num_normalized == 1
    assert read_spk2utt(d / "spk2utt") == {"1272": sorted(u for u in want if u.startswith("1272-")),
                                           "2412": ["2412-153948-0000", "2412-153948-0002"]}
    assert read_table(d / "spk2gender", parse_one_field) == {"1272": (1, "m"), "2412": (2, "f")}
    assert is_prepared(corpus, "dev-clean", d) and not is_prepared(corpus, "dev-clean", d, "chapter")
    (d / "utt2dur").unlink()
    assert not is_prepared(corpus, "dev-clean", d)


def test_sorting_by_utterance_also_sorts_by_speaker(corpus, tmp_path):
    prepare_part(corpus, "test-clean", tmp_path / "t")  # readers 121 and 1221: 121 is a prefix of neither's ids
    dd = load_data_dir(tmp_path / "t")
    spks = [dd.utt2spk[u] for u in dd.utt_ids]
    assert spks == sorted(spks) == ["121", "121", "1221"]


def test_chapter_speaker_unit_gives_kaldi_style_speakers(corpus, tmp_path):
    prepare_part(corpus, "dev-clean", tmp_path / "d", speaker_unit="chapter")
    dd = load_data_dir(tmp_path / "d")
    assert sorted(set(dd.utt2spk.values())) == ["1272-128104", "1272-135031", "2412-153948"]
    assert all(u.startswith(s + "-") for u, s in dd.utt2spk.items())
    assert read_table(tmp_path / "d" / "spk2gender", parse_one_field)["1272-135031"][1] == "m"


def test_speakers_txt_names_may_hold_the_separator(tmp_path):
    (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT + "77 | X | dev-clean | 1.0 | Nobody\n")
    genders, problems = read_speakers(tmp_path / "SPEAKERS.TXT")
    assert genders["60"] == "m" and genders["1272"] == "m" and genders["2412"] == "f" and len(genders) == 7
    assert [str(p) for p in problems] == [f"{tmp_path / 'SPEAKERS.TXT'}:10: reader 77: sex 'X' is not M or F"]


@pytest.fixture
def broken_corpus(tmp_path) -> Path:
    """dev-clean with: a FLAC whose line is gone, a line without FLAC, an id-only line, a line of another chapter."""
    root = write_corpus(tmp_path / "root", parts=("dev-clean",))
    chap = root / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    trans = chap / "1272-128104.trans.txt"
    lines = trans.read_text().splitlines()
    trans.write_text("\n".join([lines[0],                                # line 1: ok
                                "1272-128104-0007 A LINE WITHOUT AUDIO",  # line 2
                                "1272-999999-0003 ANOTHER CHAPTER",       # line 3
                                ]) + "\n")                                 # -0001 now has no line
    chap2 = root / "LibriSpeech" / "dev-clean" / "2412" / "153948"
    trans2 = chap2 / "2412-153948.trans.txt"
    trans2.write_text(trans2.read_text().replace("2412-153948-0002 OF COURSE", "2412-153948-0002"))
    return root


def test_problems_name_file_and_line_are_counted_and_listed(broken_corpus, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "dev_clean"
    report = prepare_part(broken_corpus, "dev-clean", out, max_problem_fraction=1.0)
    chap = broken_corpus / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    trans = chap / "1272-128104.trans.txt"
    trans2 = broken_corpus / "LibriSpeech" / "dev-clean" / "2412" / "153948" / "2412-153948.trans.txt"
    got = sorted((p.kind, str(p)) for p in report.problems)
    assert got == sorted([
        (MALFORMED_LINE, f"{trans}:3: id '1272-999999-0003' is not of the form 1272-128104-NNNN (this file's chapter)"),
        (NO_AUDIO, f"{trans}:2: '1272-128104-0007' has no audio file {chap / '1272-128104-0007.flac'}"),
        (NO_TRANSCRIPT, f"{chap / '1272-128104-0001.flac'}: no line for '1272-128104-0001' in {trans}"),
        (MALFORMED_LINE, f"{trans2}:2: no transcript after the id '2412-153948-0002'"),  # its FLAC is not reported twice
    ])
    assert report.problem_counts() == "2 malformed line, 1 audio without transcript, 1 transcript without audio"
    dd = load_data_dir(out)
    assert dd.utt_ids == ["1272-128104-0000", "1272-135031-0000", "2412-153948-0000"]
    assert validate_data_dir(out, required=REQUIRED) == []
    listed = (out / ".prepare" / "skipped.txt").read_text().splitlines()
    assert sorted(listed) == sorted(msg for _, msg in got)
    assert f"{trans}:3: id '1272-999999-0003'" in caplog.text and "4 problems (2 malformed line" in caplog.text


def test_too_many_problems_fail_the_part_and_leave_no_done_flag(broken_corpus, tmp_path):
    with pytest.raises(DataDirError, match=r"4 files/lines skipped, 3 usable utterances: more than max_problem_fraction=0.01"):
        prepare_part(broken_corpus, "dev-clean", tmp_path / "d")
    assert (tmp_path / "d" / ".prepare" / "skipped.txt").read_text().count("\n") == 4
    assert not (tmp_path / "d" / ".prepare" / "done").exists()


def test_missing_speakers_txt_entries_are_reported_and_missing_file_is_tolerated(tmp_path):
    root = write_corpus(tmp_path / "root", parts=("test-clean",), speakers_txt=False)
    report = prepare_part(root, "test-clean", tmp_path / "a")
    assert report.problems == [] and not (tmp_path / "a" / "spk2gender").exists()
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(SPEAKERS_TXT.replace("1221 | F", "9999 | F"))
    report = prepare_part(root, "test-clean", tmp_path / "b")
    assert [(p.kind, p.what) for p in report.problems] == [
        (NO_GENDER, "reader 1221 of test-clean is not listed; left out of spk2gender")]
    assert read_table(tmp_path / "b" / "spk2gender", parse_one_field) == {"121": (1, "f")}


def test_cli_skips_prepared_parts_and_reports_a_missing_part(corpus, tmp_path, capsys):
    args = ["--data_root", str(corpus), "--data_dir", str(tmp_path / "data"), "--parts", "dev-clean", "test-clean", "--nj", "2"]
    assert prepare_librispeech.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dev_clean", "test_clean"]
    before = (tmp_path / "data" / "dev_clean" / "wav.scp").stat().st_mtime_ns
    assert prepare_librispeech.main(args) == 0
    assert (tmp_path / "data" / "dev_clean" / "wav.scp").stat().st_mtime_ns == before
    assert f"skip: {tmp_path / 'data' / 'dev_clean'} already prepared" in capsys.readouterr().err
    assert prepare_librispeech.main(["--data_root", str(corpus), "--data_dir", str(tmp_path / "data"),
                                     "--parts", "dev-other"]) == 1
    assert "dev-other: LibriSpeech part not found" in capsys.readouterr().err


# --- local/data.sh ----------------------------------------------------------------------
def test_data_sh_prepares_the_parts_and_skips_them_on_rerun(corpus, tmp_path):
    args = (RECIPE / "local" / "data.sh", "--skip_download", "true", "--data_root", corpus,
            "--parts", "dev-clean test-clean")
    out = run_sh(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for part, name in (("dev-clean", "dev_clean"), ("test-clean", "test_clean")):
        d = tmp_path / "data" / name
        assert validate_data_dir(d, required=REQUIRED) == []
        dd = load_data_dir(d)
        assert dd.utt_ids == sorted(expected(part))
        assert all(dd.text[u] == " ".join(w.lower().replace("'tis", "tis").split()) for u, (_, _, w) in expected(part).items())
    assert "skip: no training part in --parts" in out.stderr
    out = run_sh(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("already prepared") == 2


def test_data_sh_combines_training_parts_with_genders(corpus, tmp_path):
    args = (RECIPE / "local" / "data.sh", "--skip_download", "true", "--data_root", corpus,
            "--parts", "train-clean-100 train-clean-360 dev-clean", "--train_set", "train_460")
    out = run_sh(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    d = tmp_path / "data" / "train_460"
    assert validate_data_dir(d, required=REQUIRED) == []
    assert load_data_dir(d).utt_ids == sorted(expected("train-clean-100") | expected("train-clean-360"))
    assert read_table(d / "spk2gender", parse_one_field) == {"14": (1, "f"), "19": (2, "f")}
    out = run_sh(*args, cwd=tmp_path)
    assert out.returncode == 0 and "skip: data/train_460 already combined" in out.stderr
    out = run_sh(RECIPE / "local" / "data.sh", "--skip_download", "true", "--data_root", corpus,
                 "--parts", "train-clean-100 dev-clean", cwd=tmp_path)
    assert out.returncode == 1 and "--train_set train_960 needs all three training parts" in out.stderr


def test_data_sh_stops_when_a_part_is_missing(corpus, tmp_path):
    out = run_sh(RECIPE / "local" / "data.sh", "--skip_download", "true", "--data_root", corpus,
                 "--parts", "dev-other", cwd=tmp_path)
    assert out.returncode == 1
    assert f"{corpus}/LibriSpeech/dev-other not found and --skip_download true" in out.stderr


def test_data_sh_reads_its_default_root_from_db_sh(corpus, tmp_path):
    out = run_sh(RECIPE / "local" / "data.sh", "--skip_download", "true", "--parts", "test-clean",
                 cwd=tmp_path, env_extra={"LIBRISPEECH": str(corpus)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data" / "test_clean" / "wav.scp").is_file()


# --- local/download_and_untar.sh --------------------------------------------------------
def _mirror(tmp_path: Path) -> Path:
    """A file:// mirror holding dev-clean.tar.gz made from the tiny corpus."""
    src = write_corpus(tmp_path / "src", parts=("dev-clean",))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(src / "LibriSpeech", arcname="LibriSpeech")
    return mirror


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed for file:// URLs")
def test_download_and_untar_unpacks_flags_and_skips_on_rerun(tmp_path):
    mirror = _mirror(tmp_path)
    script = RECIPE / "local" / "download_and_untar.sh"
    urls = f"file://{tmp_path}/no-such-mirror file://{mirror}"  # the first base fails, the second is used
    out = run_sh(script, "--verify", "false", "--remove_archive", "true", tmp_path / "dl", urls, "dev-clean", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    part = tmp_path / "dl" / "LibriSpeech" / "dev-clean"
    assert (part / ".complete").is_file() and (part / "1272" / "128104" / "1272-128104-0000.flac").is_file()
    assert "trying the next URL base" in out.stderr and not (tmp_path / "dl" / "dev-clean.tar.gz").exists()
    out = run_sh(script, tmp_path / "dl", f"file://{mirror}", "dev-clean", cwd=tmp_path)
    assert out.returncode == 0 and "skip: dev-clean is already unpacked" in out.stderr


def test_download_and_untar_rejects_bad_parts_and_archives(tmp_path):
    script = RECIPE / "local" / "download_and_untar.sh"
    out = run_sh(script, tmp_path, "https://www.openslr.org/resources/12", "train-clean-960", cwd=tmp_path)
    assert out.returncode == 1 and "unknown part 'train-clean-960'; expected one of: dev-clean" in out.stderr
    out = run_sh(script, tmp_path, "https://www.openslr.org/resources/12", cwd=tmp_path)
    assert out.returncode == 1 and "Usage:" in out.stderr
    archive = tmp_path / "test-clean.tar.gz"
    archive.write_bytes(b"not the release")
    out = run_sh(script, tmp_path, "https://unused.invalid", "test-clean", cwd=tmp_path)
    assert out.returncode == 1 and "size 15 bytes, the release's is 346663984" in out.stderr
    assert (tmp_path / "test-clean.tar.gz.bad").is_file() and not archive.exists()
    with archive.open("wb") as f:  # the release's size, sparse, so the md5 check is what fails
        f.truncate(346663984)
    out = run_sh(script, tmp_path, "https://unused.invalid", "test-clean", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "md5 " in out.stderr and "the release's is 32fa31d27d2e1cad72775fee3f4849a9" in out.stderr
    assert not (tmp_path / "LibriSpeech").exists()
