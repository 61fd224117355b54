"""``mtbi_table``: rows from the systems' result.json files, written as a RESULTS.md section that a
second run replaces and that leaves the rest of the file alone."""
import json

import pytest

from speechllm.bin import mtbi_table
from speechllm.mtbi.evaluate import load_targets, score_targets, to_json


def fake_result(wer_seen: float, ifr: float, count_words_acc: float, refusals: int) -> dict:
    """The keys of an mtbi_score result.json that the table reads, with recognizable numbers."""
    llm_groups = {"seen_tasks": {"accuracy": 95.0}, "unseen_tasks": {"accuracy": 85.0},
                  "overall": {"num_empty": 0, "num_looping": 0, "num_cut": 1, "num_refusal": 0},
                  "prompt_generalization": {"seen_wordings": {"wer": 0.5}, "unseen_wordings": {"wer": 0.75}},
                  "per_task": {"count_words": {"accuracy": 99.0}, "keyword": {"accuracy": 88.0}}}
    return {
        "data_set": "test", "num_items": 40, "commit": "abc1234",
        "prompt_generalization": {"seen_wordings": {"wer": wer_seen, "agreement": 81.0},
                                  "unseen_wordings": {"wer": wer_seen + 10, "agreement": 61.0}},
        "instruction_following": {"rate": ifr},
        "task_generalization": {"seen_tasks": {"accuracy": 71.0, "agreement": 72.0},
                                "unseen_tasks": {"accuracy": 31.0, "agreement": 32.0, "grounding": 44.0,
                                                 "accuracy_ci95": [24.5, 37.25]}},
        "per_task": {
            "transcribe": {"task_split": "train", "answer_task": "repeat", "wer": 12.0, "accuracy": None},
            "count_words": {"task_split": "train", "answer_task": "count_words", "accuracy": count_words_acc,
                            "agreement": 90.0},
            "keyword": {"task_split": "heldout", "answer_task": "keyword", "accuracy": 25.0, "agreement": 50.0},
        },
        "counts": {"missing": 0, "empty": 2, "looping": 1, "cut": 3, "refusal": refusals, "extra": 0},
        "llm": llm_groups,
    }


@pytest.fixture
def results(tmp_path):
    a, b = tmp_path / "a" / "result.json", tmp_path / "b=1" / "result.json"
    for path, result in ((a, fake_result(40.0, 10.0, 20.0, 5)), (b, fake_result(15.5, 72.25, 66.0, 0))):
        path.parent.mkdir()
        path.write_text(json.dumps(result))
    return a, b


def table_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_two_systems_give_two_rows_in_the_column_order(results, tmp_path):
    a, b = results
    out = tmp_path / "RESULTS.md"
    assert mtbi_table.main(["--system", f"ASR-only baseline={a}", "--system", f"MTBI (lr=1)={b}",
                            "--out", str(out), "--section", "MTBI: test"]) == 0
    rows = table_rows(out.read_text())
    assert rows["system"] == ["WER seen prompts", "WER unseen prompts", "agr. seen prompts", "agr. unseen prompts",
                              "instr. following", "seen: count_words", "seen tasks acc.", "unseen: keyword",
                              "unseen tasks acc.", "unseen acc. 95% CI", "unseen acc. vs ASR-only baseline (95% CI)",
                              "grounded unseen", "#empty", "#looping", "#cut", "#refusal",
                              "#examples"]
    assert rows["ASR-only baseline"] == ["40.00", "50.00", "81.00", "61.00", "10.00", "20.00", "71.00", "25.00",
                                         "31.00", "24.50-37.25", "-", "44.00", "2", "1", "3", "5", "40"]
    assert rows["MTBI (lr=1)"][:6] == ["15.50", "25.50", "81.00", "61.00", "72.25", "66.00"]
    text = out.read_text()
    assert "## MTBI: test" in text and "commit" in text and "Command: `python -m speechllm.bin.mtbi_table" in text
    assert "every number comes from a `result.json`" in text and f"`{b}`" in text


def test_sources_give_the_training_time_of_each_model(tmp_path):
    """From train_time.json of the training run (the nearest directory above with a config.yaml);
    a system whose run wrote none gets no time."""
    from speechllm.train.train_time import TrainTime

    paths = {}
    for name in ("timed", "untimed"):
        exp = tmp_path / "exp" / f"sllm_{name}"
        paths[name] = exp / "decode_x" / "test" / "mtbi_score" / "result.json"
        paths[name].parent.mkdir(parents=True)
        paths[name].write_text(json.dumps(fake_result(40.0, 10.0, 20.0, 0)))
        (exp / "config.yaml").write_text("max_epoch: 6\n")
    timer = TrainTime()
    timer.load([{"from_step": 0, "to_step": 900, "seconds": 1200.0, "threads": 1, "world_size": 1}], 900)
    timer.segments.append({"from_step": 900, "to_step": 1810, "seconds": 1500.0, "threads": 2, "world_size": 1})
    timer.write(tmp_path / "exp" / "sllm_timed", 1810, 6)
    out = tmp_path / "R.md"
    assert mtbi_table.main(["--system", f"t={paths['timed']}", "--system", f"u={paths['untimed']}",
                            "--out", str(out)]) == 0
    sources = {line.split(":")[0]: line for line in out.read_text().splitlines() if line.startswith("- t:")
               or line.startswith("- u:")}
    assert sources["- t"].endswith("; model: 45.0 min of training, 1,810 steps in 2 runs (threads per run: 1, 2))")
    assert "model:" not in sources["- u"]


def test_a_second_run_replaces_its_section_and_keeps_the_rest(results, tmp_path):
    a, b = results
    out = tmp_path / "RESULTS.md"
    out.write_text("# RESULTS\n\n| WER table |\n")
    for system in (f"one={a}", f"two={b}"):
        assert mtbi_table.main(["--system", system, "--out", str(out), "--section", "MTBI: test"]) == 0
    assert mtbi_table.main(["--system", f"three={a}", "--out", str(out), "--section", "MTBI: dev"]) == 0
    text = out.read_text()
    assert text.startswith("# RESULTS\n\n| WER table |\n")
    assert text.count("## MTBI: test") == 1 and "| one |" not in text and "| two |" in text
    assert text.index("## MTBI: test") < text.index("## MTBI: dev") and "| three |" in text


def test_yaml_listing_and_llm_row_and_agreement_metric(results, tmp_path):
    a, b = results
    (tmp_path / "systems.yaml").write_text(f"- {{label: base, result: '{a}'}}\n- {{label: mtbi, result: '{b}'}}\n")
    out = tmp_path / "R.md"
    assert mtbi_table.main(["--systems", str(tmp_path / "systems.yaml"), "--out", str(out),
                            "--llm_row", "text LLM"]) == 0
    rows = table_rows(out.read_text())
    assert list(rows) == ["system", "base", "mtbi", "text LLM"]
    assert rows["text LLM"] == ["0.50", "0.75", "-", "-", "-", "99.00", "95.00", "88.00", "85.00", "-", "-", "-",
                                "0", "0", "1", "0", "40"]
    assert mtbi_table.main(["--system", f"base={a}", "--out", str(out), "--metric", "agreement"]) == 0
    rows = table_rows(out.read_text())
    assert rows["system"][5:9] == ["seen: count_words", "seen tasks agr.", "unseen: keyword", "unseen tasks agr."]
    assert rows["base"][5:9] == ["90.00", "72.00", "50.00", "32.00"]


def test_a_real_result_json_fills_the_table(tmp_path):
    from test_mtbi_evaluate import EXAMPLES, target_lines, write_jsonl

    targets = load_targets(write_jsonl(tmp_path / "t.jsonl", target_lines()))
    hyps = {f"{e[0]}|{e[1]}/{e[3]}": e[9] for e in EXAMPLES if e[9] is not None}
    (tmp_path / "result.json").write_text(to_json(score_targets(targets, hyps)[0]))
    out = tmp_path / "R.md"
    assert mtbi_table.main(["--system", f"toy={tmp_path / 'result.json'}", "--out", str(out), "--llm_row", "LLM"]) == 0
    rows = table_rows(out.read_text())
    assert rows["system"][5:8] == ["seen: count_words", "seen: first_word", "seen: continue"]
    assert rows["toy"][0] == "10.00" and rows["toy"][4] == "54.55" and rows["LLM"][0] == "0.00"


def test_the_difference_to_the_first_system_is_paired_on_the_same_examples(tmp_path, capsys):
    """A second system that is right where the first one is, and on one more unseen-task example:
    +20 points (1 of the 5 unseen-task examples), and the table reads it from per_item.jsonl;
    ``--reference`` picks the systems compared with."""
    from test_mtbi_evaluate import EXAMPLES, target_lines, write_jsonl

    from speechllm.mtbi.evaluate import per_item_lines

    targets = load_targets(write_jsonl(tmp_path / "t.jsonl", target_lines()))
    hyps = {f"{e[0]}|{e[1]}/{e[3]}": e[9] for e in EXAMPLES if e[9] is not None}
    wrong = next(t for t in targets if t.task_split == "heldout" and t.reference is not None
                 and score_targets([t], {t.id: hyps.get(t.id, "")})[1][0].correct is False)
    better = hyps | {wrong.id: wrong.reference}
    for name, h in (("first", hyps), ("second", better)):
        result, scores = score_targets(targets, h)
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(to_json(result))
        (tmp_path / name / "per_item.jsonl").write_text(per_item_lines(targets, scores))
    out = tmp_path / "R.md"
    assert mtbi_table.main(["--system", f"a={tmp_path / 'first' / 'result.json'}", "--system",
                            f"b={tmp_path / 'second' / 'result.json'}", "--out", str(out)]) == 0
    rows = table_rows(out.read_text())
    column = rows["system"].index("unseen acc. vs a (95% CI)")
    assert rows["a"][column] == "-" and rows["b"][column].startswith("+20.00 (+0.00 to ")
    # one column per --reference, each row against each reference (the ablations against the full system)
    assert mtbi_table.main(["--system", f"a={tmp_path / 'first' / 'result.json'}", "--system",
                            f"b={tmp_path / 'second' / 'result.json'}", "--reference", "a", "--reference", "b",
                            "--llm_row", "LLM", "--out", str(out)]) == 0
    rows = table_rows(out.read_text())
    vs_a, vs_b = rows["system"].index("unseen acc. vs a (95% CI)"), rows["system"].index("unseen acc. vs b (95% CI)")
    assert vs_b == vs_a + 1 and all(len(r) == len(rows["system"]) for r in rows.values())
    assert rows["a"][vs_a] == "-" and rows["b"][vs_a].startswith("+20.00 (+0.00 to ")
    assert rows["b"][vs_b] == "-" and rows["a"][vs_b].startswith("-20.00 (")
    assert rows["LLM"][vs_a] == rows["LLM"][vs_b] == "-"
    assert mtbi_table.main(["--system", f"a={tmp_path / 'first' / 'result.json'}", "--reference", "c",
                            "--out", str(out)]) == 1
    assert "--reference 'c': no system with that label (labels: a)" in capsys.readouterr().err
    (tmp_path / "second" / "per_item.jsonl").write_text("{not json\n")
    assert mtbi_table.main(["--system", f"a={tmp_path / 'first' / 'result.json'}", "--system",
                            f"b={tmp_path / 'second' / 'result.json'}", "--out", str(out)]) == 1


def test_missing_files_and_bad_specs_are_clear_errors(results, tmp_path, capsys):
    assert mtbi_table.main(["--system", f"x={tmp_path / 'nope.json'}", "--out", str(tmp_path / "R.md")]) == 1
    assert "no result.json at" in capsys.readouterr().err
    assert mtbi_table.main(["--system", "just-a-label", "--out", str(tmp_path / "R.md")]) == 1
    assert "expected LABEL=RESULT_JSON" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert mtbi_table.main(["--system", f"x={tmp_path / 'bad.json'}", "--out", str(tmp_path / "R.md")]) == 1
    assert "not a result.json of mtbi_score" in capsys.readouterr().err
