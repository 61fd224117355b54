"""End to end: every stage of egs/mini_synth/asr1, then of egs/mini_synth/sllm1 on top of it, on a
tiny synthesized corpus with tiny models (the asr1 run is the session fixture ``asr_run`` of
conftest.py, shared with tests/test_recipe_mtbi.py).

All outputs go to a temporary directory (--data_dir/--feats_dir/--expdir/...), so the recipe
directories stay clean. Takes about two minutes on 2 CPU cores.
"""
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "mini_synth" / "asr1"
SLLM_RECIPE = ROOT / "egs" / "mini_synth" / "sllm1"

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("espeak-ng", "festival", "flite", "bible", "sox")),
    reason="needs the Debian packages of tools/install_debian_deps.sh (espeak-ng, festival, flite, bible-kjv, sox)",
)


def test_every_stage_runs_and_writes_results(asr_run):
    out, cmd, proc = asr_run
    assert proc.returncode == 0, proc.stderr[-4000:]

    exp = next((out / "exp").glob("asr_*"))
    assert (exp / "config.yaml").is_file()
    assert (exp / "valid.acc.ave.pt").exists()
    assert list((exp / "images").glob("*.png"))
    score = json.loads(next(exp.glob("decode_*/test/score/result.json")).read_text())
    assert score["num_utts"] == 4
    results = (out / "RESULTS.md").read_text()
    assert "| test |" in results.replace("|test|", "| test |")
    archive = next((out / "packed").glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.pt", "config.yaml", "tokens.txt", "tokenizer.model", "cmvn.json"} <= names

    # Rerunning a finished stage skips its work and says so.
    again = subprocess.run(cmd + ["--stage", "3", "--stop_stage", "6"], cwd=RECIPE, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skip:" in again.stderr


TINY_UNIT_LM = ("--max_epoch 1 --batch_bins 2048 --keep_nbest_models 1 --scheduler constant --scheduler_conf {} "
                "--model_conf.hidden_size 32 --model_conf.num_hidden_layers 1 --model_conf.num_attention_heads 2 "
                "--model_conf.num_key_value_heads 1 --model_conf.intermediate_size 64")


def test_lm_stage_and_decoding_with_shallow_fusion(asr_run):
    """--use_lm true: stage 5b trains the recipe's conf/train_lm.yaml (shrunk) on the tiny training
    transcripts, stage 7 decodes with conf/decode_lm.yaml into its own decode dir, RESULTS.md names
    the LM and its weight beside the decoding without it."""
    out, cmd, proc = asr_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "data" / "local" / "lm_train.txt").is_file()  # the default LM text, made by local/data.sh
    lm_cmd = cmd + ["--stage", "5", "--stop_stage", "8", "--use_lm", "true", "--lm_args", TINY_UNIT_LM,
                    "--lm_train_text", f"{out}/data/train/text", "--lm_tune_set", "dev", "--lm_tune_grid", "0.3:0.2 0.5:0.6"]
    run = subprocess.run(lm_cmd, cwd=RECIPE, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    lm_exp = out / "exp" / "lm_train_lm_char40"
    config = yaml.safe_load((lm_exp / "config.yaml").read_text())
    assert config["task"] == "lm" and config["token_list"].endswith("char40/tokens.txt")
    assert (lm_exp / "valid.loss.ave.pt").exists() and (lm_exp / ".done").is_file()
    asr_exp = next((out / "exp").glob("asr_*"))
    dec = asr_exp / "decode_decode_lm_train_lm_char40_valid.acc.ave" / "test"
    assert json.loads((dec / "score" / "result.json").read_text())["num_utts"] == 4
    info = yaml.safe_load((dec / "decode_info.yaml").read_text())
    weight = yaml.safe_load((RECIPE / "conf" / "decode_lm.yaml").read_text())["lm_weight"]  # the recipe's choice
    assert f"lm_weight: {weight}" in info["decoding"] and info["lm"] == f"{lm_exp}/valid.loss.ave.pt"
    assert yaml.safe_load((dec / "decode_config.yaml").read_text())["lm_weight"] == weight
    rows = [line for line in (out / "RESULTS.md").read_text().splitlines() if line.startswith("| test |")]
    assert len(rows) == 2 and sum(f"lm_weight: {weight}" in r and "lm_train_lm_char40" in r for r in rows) == 1
    # --lm_tune_set dev: one dev decoding per grid pair, the pair's weights after the config's
    tune = asr_exp / "decode_decode_lm_train_lm_char40_valid.acc.ave_tune_ctc0.5_lm0.6" / "dev"
    resolved = yaml.safe_load((tune / "decode_config.yaml").read_text())
    assert (resolved["ctc_weight"], resolved["lm_weight"]) == (0.5, 0.6)
    dev_rows = [line for line in (out / "RESULTS.md").read_text().splitlines() if line.startswith("| dev |")]
    assert len(dev_rows) == 2 and sum("--ctc_weight 0.3 --lm_weight 0.2" in r for r in dev_rows) == 1
    bad = subprocess.run(lm_cmd + ["--stage", "7", "--lm_tune_set", "test"], cwd=RECIPE, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "--lm_tune_set test is a test set" in bad.stderr
    again = subprocess.run(lm_cmd + ["--stop_stage", "5"], cwd=RECIPE, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"skip: {lm_exp}/.done exists" in again.stderr

    # --use_lexicon true: stage 5b writes the LM text's words, the LM decodings (own _lex dirs) use them
    lex = subprocess.run(lm_cmd + ["--use_lexicon", "true", "--lm_tune_set", "", "--stop_stage", "7"], cwd=RECIPE,
                         capture_output=True, text=True, timeout=300)
    assert lex.returncode == 0, lex.stderr[-4000:]
    words = (lm_exp / "words.txt").read_text().split()
    train_words = {w for line in (out / "data" / "train" / "text").read_text().splitlines() for w in line.split()[1:]}
    assert words == sorted(train_words)
    dec = asr_exp / "decode_decode_lm_train_lm_char40_valid.acc.ave_lex" / "test"
    assert yaml.safe_load((dec / "decode_config.yaml").read_text())["lexicon"] == f"{lm_exp}/words.txt"
    assert f"lexicon: {lm_exp}/words.txt" in yaml.safe_load((dec / "decode_info.yaml").read_text())["decoding"]
    # (the tiny model's hypotheses may all be empty; the search itself: tests/test_beam_search.py)
    assert {w for line in (dec / "text").read_text().splitlines() for w in line.split()[1:]} <= train_words


TINY_LM = """model_conf: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1,
             intermediate_size: 64, max_position_embeddings: 512, tie_word_embeddings: true}
max_len: 512
max_epoch: 1
batch_bins: 4096
num_workers: 0
optim: adamw
optim_conf: {lr: 0.002}
keep_nbest_models: 1
best_model_criterion: [[valid, loss, min]]
"""
TINY_SLLM = (
    "--max_epoch 1 --batch_bins 4000 --num_workers 0 --keep_nbest_models 1 --scheduler_conf.warmup_steps 2 "
    "--encoder_conf.output_size 32 --encoder_conf.linear_units 64 --encoder_conf.num_blocks 2 "
    "--encoder_conf.attention_heads 2 --encoder_conf.interctc_layer_idx [1] --projector_conf.hidden_size 16 "
    "--lora.r 2"
)


def test_sllm_recipe_runs_on_the_asr_recipe_outputs(asr_run, tmp_path):
    asr_out, _, asr_proc = asr_run
    assert asr_proc.returncode == 0, asr_proc.stderr[-2000:]
    asr_exp = next((asr_out / "exp").glob("asr_*"))
    (tmp_path / "lm.yaml").write_text(TINY_LM)
    cmd = [
        "./sllm.sh", "--inference_nj", "2",
        "--data_dir", f"{asr_out}/data", "--feats_dir", f"{asr_out}/dump", "--expdir", f"{tmp_path}/exp",
        "--results_md", f"{tmp_path}/RESULTS.md", "--test_sets", "test", "--min_dur", "0.1",
        "--llm_pretrain_config", f"{tmp_path}/lm.yaml", "--llm_prompts", "conf/prompts/mini_tasks.yaml",
        "--llm_prep_opts", "--max_plain_chunks 20 --num_valid 4 --num_valid_chunks 2 --num_eval 3 "
                           "--num_eval_seen 2 --vocab_size 300 --tasks_per_sentence 1",
        "--encoder_init", f"{asr_exp}/valid.acc.ave.pt",
        "--sllm_config", "conf/train_sllm.yaml", "--sllm_args", TINY_SLLM,
        "--inference_config", "conf/decode_sllm.yaml", "--inference_args", "--batch_size 2 --max_new_tokens_base 2",
        "--results_extra_exp_dirs", f"{asr_out}/exp",
    ]
    proc = subprocess.run(cmd, cwd=SLLM_RECIPE, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    exp = tmp_path / "exp"
    assert (exp / "llm_lm" / "hf" / "config.json").is_file()
    assert list((exp / "llm_lm" / "eval_tasks").glob("*.md"))
    sllm_exp = exp / "sllm_train_sllm"
    score = json.loads(next(sllm_exp.glob("decode_*/test/score/result.json")).read_text())
    assert score["num_utts"] == 4 and "num_truncated_hyp" in score
    results = (tmp_path / "RESULTS.md").read_text()
    assert "conf/train_sllm.yaml" in results and "asr_" in results  # the speech LLM and the asr1 baseline
    assert (sllm_exp / "export" / "llm" / "config.json").is_file()
