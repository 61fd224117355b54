"""End to end: every stage of egs/mini_synth/asr1 on a tiny synthesized corpus with a tiny model.

All outputs go to a temporary directory (--data_dir/--feats_dir/--expdir/...), so the recipe
directory stays clean. Takes about a minute on 2 CPU cores.
"""
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "mini_synth" / "asr1"
TINY_MODEL = (
    "--max_epoch 2 --batch_bins 4000 --num_workers 0 --keep_nbest_models 2 "
    "--encoder_conf.output_size 32 --encoder_conf.linear_units 64 --encoder_conf.num_blocks 1 "
    "--encoder_conf.attention_heads 2 --decoder_conf.linear_units 64 --decoder_conf.num_blocks 1 "
    "--decoder_conf.attention_heads 2 --scheduler_conf.warmup_steps 5"
)

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("espeak-ng", "festival", "bible", "sox")),
    reason="needs the Debian packages of tools/install_debian_deps.sh (espeak-ng, festival, bible-kjv, sox)",
)


def test_every_stage_runs_and_writes_results(tmp_path):
    out = tmp_path
    cmd = [
        "./run.sh", "--nj", "2", "--inference_nj", "2",
        "--data_dir", f"{out}/data", "--feats_dir", f"{out}/dump", "--expdir", f"{out}/exp",
        "--results_md", f"{out}/RESULTS.md", "--pack_dir", f"{out}/packed",
        "--local_data_opts", f"--tiny true --audio_dir {out}/audio --realspeech_dir {out}/no_realspeech",
        "--test_sets", "test", "--token_type", "char", "--nbpe", "40",
        "--min_dur", "0.1", "--speed_perturb_factors", "0.9 1.0 1.1", "--asr_args", TINY_MODEL, "--inference_args", "--beam_size 2 --batch_size 4",
    ]
    proc = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=900)
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
