"""WER/CER scoring (jiwer after normalize_text) and the RESULTS.md writer."""
import json
import re

import jiwer
import pytest

from speechllm.bin import score as score_bin
from speechllm.bin import write_results as write_results_bin
from speechllm.scoring.results import COLUMNS, collect_rows, write_results_md
from speechllm.scoring.wer import find_loop, is_looping, score_dir, score_texts
from speechllm.text.normalizer import normalize_text

PAIRS = {
    "u1": ("The cat sat on the mat.", "the cat sit on the mat mat"),
    "u2": ("Hello, World!", "hello word"),
    "u3": ("and God said let there be light", "and god said let there be light"),
    "u4": ("a b c d e", "x b d e f g"),
}


def _write_text(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}".rstrip() + "\n" for k, v in table.items()), encoding="utf-8")


def test_wer_and_cer_equal_jiwer_on_known_pairs():
    refs = {k: r for k, (r, _) in PAIRS.items()}
    hyps = {k: h for k, (_, h) in PAIRS.items()}
    result, _ = score_texts(refs, hyps)
    ids = sorted(PAIRS)
    ref_n = [normalize_text(refs[k]) for k in ids]
    hyp_n = [normalize_text(hyps[k]) for k in ids]
    assert result["wer"] == pytest.approx(100 * jiwer.wer(ref_n, hyp_n))
    assert result["cer"] == pytest.approx(100 * jiwer.cer(ref_n, hyp_n))
    out = jiwer.process_words(ref_n, hyp_n)
    assert (result["substitutions"], result["deletions"], result["insertions"]) == \
        (out.substitutions, out.deletions, out.insertions)
    assert result["num_ref_words"] == sum(len(r.split()) for r in ref_n)
    assert result["num_utts"] == 4


def test_normalization_applies_to_both_sides():
    result, _ = score_texts({"u": "The LORD'S house, well-known!"}, {"u": "the lord's house well known"})
    assert result["wer"] == 0.0 and result["cer"] == 0.0


def test_missing_hypothesis_counts_as_deletions_and_is_listed():
    refs = {"a": "one two three", "b": "four five"}
    result, per_utt = score_texts(refs, {"a": "one two three"})
    assert result["deletions"] == 2 and result["num_ref_words"] == 5
    assert result["wer"] == pytest.approx(40.0)
    assert result["num_missing_hyp"] == 1 and result["missing_hyp_utts"] == ["b"]
    assert [s.flags for s in per_utt] == [[], ["missing-hyp"]]


def test_empty_and_looping_hypotheses_are_counted():
    refs = {"a": "go to the house", "b": "go now", "c": "and the lord said"}
    hyps = {"a": "", "b": "go go go go go", "c": "and the lord and the lord and the lord and the lord said"}
    result, _ = score_texts(refs, hyps)
    assert result["num_empty_hyp"] == 1 and result["empty_hyp_utts"] == ["a"]
    assert result["num_looping_hyp"] == 2 and result["looping_hyp_utts"] == ["b", "c"]
    assert result["num_missing_hyp"] == 0


def test_looping_means_an_ngram_repeated_four_times_in_a_row():
    assert find_loop("x a b a b a b a b y".split()) == (1, 2)
    assert is_looping("the the the the".split())
    assert not is_looping("the the the".split())
    assert not is_looping("a b a b a b c a b".split())
    assert not is_looping([])


def test_hypotheses_without_reference_are_reported_not_scored():
    result, _ = score_texts({"a": "yes"}, {"a": "yes", "zz": "extra words"})
    assert result["wer"] == 0.0 and result["num_extra_hyp"] == 1 and result["extra_hyp_utts"] == ["zz"]


def test_score_dir_writes_result_files_with_alignment(tmp_path):
    _write_text(tmp_path / "data" / "test" / "text", {k: r for k, (r, _) in PAIRS.items()} | {"u5": "lost"})
    _write_text(tmp_path / "hyp" / "text", {k: h for k, (_, h) in PAIRS.items()})
    result = score_dir(tmp_path / "data" / "test" / "text", tmp_path / "hyp" / "text", tmp_path / "score")
    saved = json.loads((tmp_path / "score" / "result.json").read_text())
    assert saved == result and saved["data_set"] == "test" and saved["num_missing_hyp"] == 1
    per_utt = (tmp_path / "score" / "per_utt.txt").read_text().splitlines()
    u1 = [line for line in per_utt if line.startswith("u1 ")]
    assert u1[0].split()[2:] == ["the", "cat", "sat", "on", "the", "***", "mat"]
    assert u1[2].split()[2:] == ["C", "C", "S", "C", "C", "I", "C"]
    assert u1[3].startswith("u1 #err 2/6")
    assert any(line.startswith("u5 #err 1/1") and "missing-hyp" in line for line in per_utt)
    summary = (tmp_path / "score" / "result.txt").read_text()
    assert summary.startswith(f"%WER {result['wer']:.2f} [ {result['word_errors']} / {result['num_ref_words']}")


def test_score_cli_reports_malformed_input(tmp_path, capsys):
    (tmp_path / "ref").write_text("a x\na y\n")
    (tmp_path / "hyp").write_text("a x\n")
    assert score_bin.main(["--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                           "--out_dir", str(tmp_path / "out")]) == 1
    assert "duplicate id 'a'" in capsys.readouterr().err


def _make_decode(exp, model, dset, refs, hyps, info=True):
    dec = exp / model / "decode_beam" / dset
    _write_text(dec.parent.parent.parent / "data" / dset / "text", refs)
    _write_text(dec / "text", hyps)
    if info:
        (dec / "decode_info.yaml").write_text(
            f"model: {exp}/{model}/valid.acc.ave.pt\nasr_config: conf/train.yaml\n"
            f"decoding: \"beam_size: 8 ctc_weight: 0.3\"\ndata: dump/fbank/{dset}\n")
    return score_dir(dec.parent.parent.parent / "data" / dset / "text", dec / "text", dec / "score")


def _table_rows(md):
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_results_md_has_the_columns_and_only_numbers_from_result_files(tmp_path):
    exp = tmp_path / "exp"
    r1 = _make_decode(exp, "asr_a", "test", {"u1": "a b c d", "u2": "e f"}, {"u1": "a b x d", "u2": "e f g"})
    r2 = _make_decode(exp, "asr_a", "test_real_jfk", {"j": "ask not what"}, {"j": "ask what"}, info=False)
    (exp / "stage_times.tsv").write_text("1\tdata\t30\tx\n6\ttrain\t600\tx\n6\ttrain\t900\tx\n5b\tlm\t70\tx\n")
    out = tmp_path / "RESULTS.md"
    assert write_results_bin.main(["--exp_dir", str(exp), "--out", str(out), "--stage_times",
                                   str(exp / "stage_times.tsv"), "--header", "machine: test box"]) == 0
    md = out.read_text()
    header, rows = _table_rows(md)
    assert header == [h for h, _ in COLUMNS]
    assert header == ["data set", "model", "config", "WER", "CER", "#utts", "decoding settings", "commit"]
    by_set = {r["data set"]: r for r in rows}
    assert set(by_set) == {"test", "test_real_jfk"}
    for name, res in (("test", r1), ("test_real_jfk", r2)):
        assert by_set[name]["WER"] == f"{res['wer']:.2f}"
        assert by_set[name]["CER"] == f"{res['cer']:.2f}"
        assert by_set[name]["#utts"] == str(res["num_utts"])
    assert by_set["test"]["model"] == "asr_a/valid.acc.ave.pt"
    assert by_set["test"]["config"] == "conf/train.yaml"
    assert "beam_size: 8" in by_set["test"]["decoding settings"]
    # no decode_info.yaml: those cells say so instead of guessing
    assert by_set["test_real_jfk"]["model"] == "-" and by_set["test_real_jfk"]["config"] == "-"
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?|unknown", by_set["test"]["commit"])
    assert "Total run time: 16.7 min (1000 s); per stage: 1 data 30 s, 5b lm 70 s, 6 train 900 s" in md
    assert "machine: test box" in md
    # every number in the table comes from a result.json
    allowed = {f"{r[k]:.2f}" for r in (r1, r2) for k in ("wer", "cer")} | {str(r["num_utts"]) for r in (r1, r2)}
    for row in rows:
        for col in ("WER", "CER", "#utts"):
            assert row[col] in allowed


def test_write_results_md_prints_dash_for_absent_values(tmp_path):
    text = write_results_md([{"data_set": "test", "wer": None}], tmp_path / "R.md", "T", ["h1"])
    _, rows = _table_rows(text)
    assert rows[0]["WER"] == "-" and rows[0]["CER"] == "-" and rows[0]["model"] == "-"
    assert text.startswith("# T\n\n- h1\n")
    assert collect_rows(tmp_path) == []


def test_gen_info_counts_outputs_cut_at_the_length_bound(tmp_path, capsys):
    (tmp_path / "ref").write_text("a one two\nb three\n")
    (tmp_path / "hyp").write_text("a one two\nb three three three three three\n")
    (tmp_path / "gen_info").write_text("a 3 1\nb 12 0\n")
    result = score_dir(tmp_path / "ref", tmp_path / "hyp", tmp_path / "out", tmp_path / "gen_info")
    assert result["num_truncated_hyp"] == 1 and result["truncated_hyp_utts"] == ["b"]
    assert result["num_looping_hyp"] == 1
    assert "1 cut at the length bound" in (tmp_path / "out" / "result.txt").read_text()
    (tmp_path / "gen_info").write_text("a 3 1\nb x 0\n")
    assert score_bin.main(["--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--out_dir",
                           str(tmp_path / "out2"), "--gen_info", str(tmp_path / "gen_info")]) == 1
    assert "gen_info:2:" in capsys.readouterr().err


def test_stage_times_keep_the_latest_run_and_name_the_commands(tmp_path):
    from speechllm.scoring.results import stage_time_lines

    tsv = tmp_path / "stage_times.tsv"
    tsv.write_text("1\tdata\t60\tx\n6\ttrain\t900\tx\n"            # an old run: no command column
                   "5b\tlm\t200\tx\t./run.sh --use_lm true\n7\tdecode\t50\tx\t./run.sh --stage 7\n"
                   "7\tdecode\t40\tx\t./run.sh --stage 7\n")
    total, commands = stage_time_lines(tsv)
    assert total.startswith("Total run time: 20.0 min (1200 s); per stage: 1 data 60 s, 5b lm 200 s, 6 train 900 s, "
                            "7 decode 40 s")
    assert commands == ("Stage times from several invocations: command not recorded (stages 1 6); "
                        "`./run.sh --use_lm true` (stages 5b); `./run.sh --stage 7` (stages 7)")
    tsv.write_text("1\tdata\t60\tx\t./run.sh\n6\ttrain\t900\tx\t./run.sh\n")
    assert len(stage_time_lines(tsv)) == 1  # one invocation: the Command line of the header says it


def test_a_partial_stage_run_adds_to_the_earlier_time(tmp_path):
    """A rerun that skipped the systems trained before and trained one more adds its time."""
    from speechllm.scoring.results import stage_time_lines

    tsv = tmp_path / "stage_times.tsv"
    tsv.write_text("4\ttrain\t3000\tx\t./run.sh\n5\tdecode\t100\tx\t./run.sh\n"
                   "4\ttrain\t900\tx\t./run.sh --systems 'a b'\tpartial\n"
                   "5\tdecode\t40\tx\t./run.sh --systems 'a b'\n")   # decoding redone whole
    total, commands = stage_time_lines(tsv)
    assert total == "Total run time: 65.7 min (3940 s); per stage: 4 train 3900 s, 5 decode 40 s"
    assert commands == ("Stage times from several invocations: `./run.sh` (stages 4); "
                        "`./run.sh --systems 'a b'` (stages 4 5)")


def test_a_stage_run_over_other_systems_adds_and_a_rerun_of_the_same_replaces(tmp_path):
    """Per-system stages name their systems (scope): the table's stage time is the sum of the work
    that made its rows, not the last invocation's alone."""
    from speechllm.scoring.results import stage_time_lines

    tsv = tmp_path / "stage_times.tsv"
    tsv.write_text("3\ttargets\t200\tx\t./run.sh\n"
                   "4\ttrain\t3000\tx\t./run.sh --systems 'a b'\t\ta b\n"
                   "4\ttrain\t1100\tx\t./run.sh --systems c\t\tc\n"        # other systems: adds
                   "4\ttrain\t1000\tx\t./run.sh --systems c\t\tc\n"        # c again: replaces
                   "4\ttrain\t300\tx\t./run.sh --systems 'a b c d'\tpartial\ta b c d\n")
    total, commands = stage_time_lines(tsv)
    assert total == "Total run time: 75.0 min (4500 s); per stage: 3 targets 200 s, 4 train 4300 s (for a b c d)"
    assert commands == ("Stage times from several invocations: `./run.sh` (stages 3); "
                        "`./run.sh --systems 'a b'` (stages 4); `./run.sh --systems c` (stages 4); "
                        "`./run.sh --systems 'a b c d'` (stages 4)")
    # a whole rerun over all the systems replaces every earlier run it covers
    with tsv.open("a") as f:
        f.write("4\ttrain\t5000\tx\t./run.sh --systems 'a b c d'\t\ta b c d\n")
    assert stage_time_lines(tsv)[0].endswith("4 train 5000 s (for a b c d)")
    # systems that were never timed (their run was stopped) are not in the stage's note
    tsv.write_text("4\ttrain\t900\tx\t./run.sh --systems 'c d'\t\tc d\n"
                   "5\tdecode\t60\tx\t./run.sh --systems 'a b c d'\t\ta b c d\n")
    assert stage_time_lines(tsv)[0].endswith("4 train 900 s (for c d), 5 decode 60 s (for a b c d)")


def test_per_speaker_wer_from_the_data_dirs_utt2spk(tmp_path):
    """u1, u2 by spkA (8 reference words, 3 errors), u3, u4 by spkB; u9 has no utt2spk line."""
    refs = {k: r for k, (r, _) in PAIRS.items()} | {"u9": "one two"}
    _write_text(tmp_path / "data" / "test" / "text", refs)
    _write_text(tmp_path / "data" / "test" / "utt2spk", {"u1": "spkA", "u2": "spkA", "u3": "spkB", "u4": "spkB"})
    _write_text(tmp_path / "hyp" / "text", {k: h for k, (_, h) in PAIRS.items()} | {"u9": "one two"})
    result = score_dir(tmp_path / "data" / "test" / "text", tmp_path / "hyp" / "text", tmp_path / "score")
    spk = result["per_speaker"]
    assert list(spk) == ["(no speaker)", "spkA", "spkB"]
    expected_a = jiwer.process_words([normalize_text(PAIRS[u][0]) for u in ("u1", "u2")],
                                     [normalize_text(PAIRS[u][1]) for u in ("u1", "u2")])
    assert spk["spkA"]["wer"] == pytest.approx(100 * expected_a.wer) and spk["spkA"]["num_utts"] == 2
    assert spk["spkA"]["word_errors"] == 3 and spk["spkA"]["num_ref_words"] == 8
    expected_b = jiwer.process_characters([normalize_text(PAIRS[u][0]) for u in ("u3", "u4")],
                                          [normalize_text(PAIRS[u][1]) for u in ("u3", "u4")])
    assert spk["spkB"]["cer"] == pytest.approx(100 * expected_b.cer)
    assert spk["(no speaker)"] == {"wer": 0.0, "cer": 0.0, "num_utts": 1, "num_ref_words": 2, "word_errors": 0}
    # the per-speaker errors add up to the set's
    assert sum(v["word_errors"] for v in spk.values()) == result["word_errors"]
    assert "speaker spkA (2 utterances)" in (tmp_path / "score" / "result.txt").read_text()
    # RESULTS.md notes the per-speaker WER of a set with a few speakers
    text = write_results_md(collect_rows(tmp_path), tmp_path / "R.md")
    assert f"WER per speaker (no speaker) 0.00, spkA {spk['spkA']['wer']:.2f}, spkB {spk['spkB']['wer']:.2f}" in text
