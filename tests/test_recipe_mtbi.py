"""End to end: every stage of the MTBI template (egs/TEMPLATE/mtbi1) from egs/mini_synth/mtbi1, on
the tiny asr1 run of conftest.py (``asr_run``: data, features, ASR model) and a tiny random LLM, for
two systems of the recipe's conf/systems.yaml with one epoch each (the LoRA ASR-only baseline and
MTBI + interleaving with the frozen LLM and the ctc_text projector, the pair the target compares),
on the dev and test benchmarks, the table comparing with MTBI + IL; then a rerun that skips it all.

All outputs go to a temporary directory, so the recipe directory stays clean. About a minute on
2 CPU cores, after the asr1 fixture.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sllm_toys import make_tiny_llm

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "mini_synth" / "mtbi1"
# The speech LLM's encoder must be the tiny ASR model's (conftest.TINY_MODEL) to load its weights.
TINY_SLLM = (
    "--max_epoch 1 --batch_bins 4000 --num_workers 0 --keep_nbest_models 1 --scheduler_conf.warmup_steps 2 "
    "--encoder_conf.output_size 32 --encoder_conf.linear_units 64 --encoder_conf.num_blocks 2 "
    "--encoder_conf.attention_heads 2 --encoder_conf.interctc_layer_idx [1] --projector_conf.hidden_size 16 "
    "--log_interval 5"
)

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("espeak-ng", "festival", "flite", "bible", "sox")),
    reason="needs the Debian packages of tools/install_debian_deps.sh (espeak-ng, festival, flite, bible-kjv, sox)",
)


def test_mtbi_template_trains_decodes_scores_and_tables_two_systems(asr_run, tmp_path):
    asr_out, _, asr_proc = asr_run
    assert asr_proc.returncode == 0, asr_proc.stderr[-2000:]
    asr_exp = next((asr_out / "exp").glob("asr_*"))
    llm = make_tiny_llm(tmp_path / "llm")
    out = tmp_path / "mtbi"
    cmd = [
        "./mtbi.sh", "--nj", "1", "--inference_nj", "1", "--train_jobs", "2",
        "--data_dir", f"{asr_out}/data", "--feats_dir", f"{asr_out}/dump", "--feats_type", "fbank",
        "--train_set", "train_sp", "--valid_set", "dev", "--test_sets", "test", "--mtbi_test_sets", "dev test",
        "--data_recipe", "the asr_run fixture", "--asr_exp", str(asr_exp),
        "--asr_token_dir", f"{asr_out}/data/token_list/char40", "--encoder_init", f"{asr_exp}/valid.acc.ave.pt",
        "--llm", str(llm), "--systems", "asr_only mtbi_il_ctc_text", "--sllm_args", TINY_SLLM,
        "--train_per_utt", "2", "--eval_per_utt", "3",
        "--targets_opts", "--max_new_tokens_base 3 --max_new_tokens_per_word 0 --batch_size 16",
        "--inference_args", "--batch_size 4 --max_new_tokens_base 2",
        "--mtbi_inference_args", "--batch_size 8 --max_new_tokens_base 2 --max_new_tokens_min continue=3",
        "--expdir", f"{out}/exp", "--mtbi_dump", f"{out}/dump", "--results_md", f"{out}/RESULTS.md",
        "--table_references", "mtbi_il_ctc_text mtbi_ctc_text",
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # Stage 2: the training set aligned (mtbi_il_ctc_text interleaves); stage 3: targets without leaks.
    assert (out / "dump" / "align" / "train_sp" / "word_align").stat().st_size > 0
    train_targets = [json.loads(line) for line in (out / "dump" / "targets" / "train_sp.jsonl").open()]
    assert train_targets and all(t["wording_split"] == "train" for t in train_targets)
    bench_utts = {}
    for dset in ("dev", "test"):  # both benchmark sets (--mtbi_test_sets): 4 utterances x 3 prompts
        targets = [json.loads(line) for line in (out / "dump" / "targets" / f"{dset}.jsonl").open()]
        assert len(targets) == 4 * 3, dset
        bench_utts[dset] = {t["utt_id"] for t in targets}
    assert len(bench_utts["dev"]) == 4 and not bench_utts["dev"] & bench_utts["test"]

    # Stage 4: one exp dir per system; the LoRA baseline without the mtbi block, the recipe's
    # MTBI + IL system (frozen LLM, ctc_text) with targets + words.
    exp = out / "exp"
    systems = ("asr_only", "mtbi_il_ctc_text")
    configs = {s: yaml.safe_load((exp / f"sllm_{s}" / "config.yaml").read_text()) for s in systems}
    assert configs["asr_only"]["mtbi"] is None
    assert configs["asr_only"]["lora"] and configs["mtbi_il_ctc_text"]["lora"] is None
    assert configs["mtbi_il_ctc_text"]["projector"] == "ctc_text"
    assert configs["mtbi_il_ctc_text"]["mtbi"]["interleave_prob"] == 0.5
    assert configs["mtbi_il_ctc_text"]["mtbi"]["word_align"].endswith("align/train_sp/word_align")
    assert {c["max_epoch"] for c in configs.values()} == {1}
    assert "interleaving:" in (exp / "sllm_mtbi_il_ctc_text" / "train.log").read_text()
    # --train_jobs 2: on 2 or more cores, one system per core, one thread each, both timed
    if len(os.sched_getaffinity(0)) >= 2:
        assert "cores 0: system" in proc.stderr and "cores 1: system" in proc.stderr
    for s in systems:
        segments = json.loads((exp / f"sllm_{s}" / "train_time.json").read_text())["segments"]
        assert len(segments) == 1 and segments[0]["seconds"] > 0
        assert segments[0]["threads"] == (1 if len(os.sched_getaffinity(0)) >= 2 else segments[0]["threads"])
    # the per-system stages' times name their systems (a run of other systems adds to them)
    times = [line.split("\t") for line in (exp / "stage_times.tsv").read_text().splitlines()]
    assert {r[0]: r[6:] for r in times if r[0] in "456"} == {s: [" ".join(systems)] for s in "456"}

    # Stages 5-7: WER rows of both systems and the MTBI table with both systems and the LLM row.
    for s in systems:
        wer = next((exp / f"sllm_{s}").glob("decode_decode_sllm_*/test/score/result.json"))
        assert json.loads(wer.read_text())["num_utts"] == 4
        for dset in ("dev", "test"):
            bench = next((exp / f"sllm_{s}").glob(f"decode_decode_mtbi_*/{dset}/mtbi_score/result.json"))
            assert json.loads(bench.read_text())["num_items"] == 12
    results = (out / "RESULTS.md").read_text()
    assert "sllm_asr_only/" in results and "sllm_mtbi_il_ctc_text/" in results  # the WER table
    # one MTBI table per benchmark set, in the order of --mtbi_test_sets
    dev_at = results.index("<!-- mtbi_table begin: MTBI benchmark: dev -->")
    test_at = results.index("<!-- mtbi_table begin: MTBI benchmark: test -->")
    assert dev_at < test_at
    for table in (results[dev_at:test_at], results[test_at:]):
        for label in ("ASR-only baseline", "MTBI + IL, frozen LLM, text CTC", "text LLM (transcript as text)"):
            assert f"| {label} |" in table, table
        assert table.count("min of training, ") == 2  # the sources give each model's training time
        # --table_references: the rows compared with MTBI + IL (a system not trained here is left out)
        assert "| unseen acc. vs MTBI + IL, frozen LLM, text CTC (95% CI) |" in table
        assert "unseen acc. vs ASR-only" not in table and "vs MTBI, frozen" not in table
    assert "--table_references: mtbi_ctc_text is not one of --systems" in proc.stderr

    # A rerun skips every finished stage and says so.
    again = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    for skipped in ("word_align exists", "train_sp.jsonl is complete", "dev.jsonl is complete", "test.jsonl is complete",
                    "sllm_asr_only/.done exists", "sllm_mtbi_il_ctc_text/.done exists",
                    "mtbi_score/result.json is newer"):
        assert skipped in again.stderr, skipped
    assert "MTBI + IL, frozen LLM, text CTC" in (out / "RESULTS.md").read_text()


def test_mtbi_template_names_the_recipe_to_run_when_inputs_are_missing(tmp_path):
    cmd = ["./mtbi.sh", "--stop_stage", "1", "--data_dir", f"{tmp_path}/data", "--feats_dir", f"{tmp_path}/dump",
           "--data_recipe", "../asr1", "--llm", f"{tmp_path}/no_llm", "--llm_recipe", "../sllm1 (stage 4)",
           "--systems", "asr_only mtbi_il", "--expdir", f"{tmp_path}/exp"]
    proc = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"no transcripts of train at {tmp_path}/dump/train/text (run ../asr1 first" in proc.stderr
    assert "the systems mtbi_il interleave speech and text" in proc.stderr
    assert "(run ../sllm1 (stage 4) first)" in proc.stderr
