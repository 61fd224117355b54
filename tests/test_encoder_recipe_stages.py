"""End to end on a tiny synthesized data dir: the training entry point with an SSL encoder on raw
audio (conf/tuning/train_hubert_tiny.yaml) and with dumped features (train_precomputed_tiny.yaml),
decoding both ways, and recipe stages 3b (encoder features) and 3c (units) run as asr.sh would.

Until the pretrained encoders are registered, ``hubert`` is a contract-following fake
(tests/fake_encoders.py); once they are, the real tiny random HuBERT runs here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import UTTS, write_lines
from fake_encoders import fake_encoders  # noqa: F401  (fixture)
from speechllm.bin import asr_inference, dump_encoder_features, train
from speechllm.bin.compute_fbank import combine_fbank_jobs, compute_fbank_job
from speechllm.data.datadir import read_feats_scp
from speechllm.text.tokenizer import train_tokenizer
from speechllm.units import read_units

ROOT = Path(__file__).resolve().parents[1]
TUNING = ROOT / "egs" / "mini_synth" / "asr1" / "conf" / "tuning"
TEMPLATE = ROOT / "egs" / "TEMPLATE" / "asr1"
TWO_STEPS = ["--max_epoch", "1", "--batch_bins", "300", "--keep_nbest_models", "1"]  # 4 utts -> 2 batches


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(words + "\n" for _, _, words in UTTS.values()))
    model, token_list = train_tokenizer(corpus, tmp_path / "token_list", model_type="char", vocab_size=None)
    return model, token_list


def run_train(config: Path, data: Path, exp: Path, tokens: tuple[Path, Path], *extra: str) -> int:
    return train.main(["--task", "asr", "--config", str(config), "--train_data_dir", str(data),
                       "--valid_data_dir", str(data), "--token_list", str(tokens[1]), "--bpemodel", str(tokens[0]),
                       "--exp_dir", str(exp), "--ngpu", "0", *TWO_STEPS, *extra])


def run_decode(exp: Path, data: Path, out: Path, tokens: tuple[Path, Path]) -> list[str]:
    rc = asr_inference.main(["--model_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"),
                             "--token_list", str(tokens[1]), "--bpemodel", str(tokens[0]), "--data_dir", str(data),
                             "--output_dir", str(out), "--mode", "greedy_ctc", "--batch_size", "2"])
    assert rc == 0
    return [line.split(" ", 1)[0] for line in (out / "text.1").read_text().splitlines()]


def test_ssl_encoder_on_raw_audio_then_on_its_dumped_features(fake_encoders, data_dir, tmp_path, tokens, capfd):  # noqa: F811
    write_lines(data_dir / "utt2dur", [f"{u} {d}" for u, (_, d, _) in sorted(UTTS.items())])

    # 1. the encoder in the graph, reading wav.scp
    exp_raw = tmp_path / "exp_raw"
    assert run_train(TUNING / "train_hubert_tiny.yaml", data_dir, exp_raw, tokens) == 0
    saved = yaml.safe_load((exp_raw / "config.yaml").read_text())
    assert saved["input"] == "raw" and saved["encoder"] == "hubert"
    err = capfd.readouterr().err
    assert "epoch 1/1" in err and "s of input per s" in err
    assert run_decode(exp_raw, data_dir, tmp_path / "decode_raw", tokens) == sorted(UTTS)

    # 2. the same encoder dumped once (stage 3b), a precomputed encoder trained on top
    dump = tmp_path / "dump" / "train"
    assert dump_encoder_features.main(["--data_dir", str(data_dir), "--out_dir", str(dump), "--encoder_config",
                                       str(TUNING / "train_hubert_tiny.yaml"), "--layer", "last"]) == 0
    shutil.copy(data_dir / "text", dump / "text")
    dim = yaml.safe_load((dump / "dump_info.yaml").read_text())["dim"]
    exp_pre = tmp_path / "exp_precomputed"
    assert run_train(TUNING / "train_precomputed_tiny.yaml", dump, exp_pre, tokens, "--input_size", str(dim)) == 0
    assert yaml.safe_load((exp_pre / "config.yaml").read_text())["input"] == "dumped"
    assert run_decode(exp_pre, dump, tmp_path / "decode_pre", tokens) == sorted(UTTS)

    # a dump of another dimension is caught before training starts
    assert run_train(TUNING / "train_precomputed_tiny.yaml", dump, tmp_path / "exp_bad", tokens, "--input_size", "7") == 1
    assert "input_size 7 does not match the dumped features" in capfd.readouterr().err


CONFORMER = {  # an fbank encoder that every process knows: the stage scripts run in subprocesses
    "input_size": 80, "encoder": "conformer",
    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1,
                     "cnn_module_kernel": 3, "dropout_rate": 0.0, "positional_dropout_rate": 0.0},
}


def run_stages(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    """Source stages 3b and 3c with the variables asr.sh defines, as asr.sh's run_stage does."""
    script = f"""
set -euo pipefail
. {TEMPLATE}/utils/log.sh
ngpu=0; nj=2; feats_dir=dump/fbank; train_sp=train; valid_set=""; test_sets=""; min_dur=0.1; max_dur=20
train_cmd={ROOT}/tools/launch/run_local.sh
encoder_feats_config={config}; encoder_feats_layer=last; encoder_feats_dtype=float32
encoder_feats_checkpoint=""; encoder_feats_opts=""; encoder_feats_dir=dump/enc_last
num_units=3; kmeans_subset_utts=3; kmeans_opts="--batch_size 64"; units_dir=dump/enc_last/units3
. {TEMPLATE}/stages/3b_encoder_features.sh
. {TEMPLATE}/stages/3c_units.sh
"""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


def test_stages_3b_and_3c_dump_filter_and_make_units_idempotently(data_dir, tmp_path):
    fbank = tmp_path / "dump" / "fbank" / "train"
    compute_fbank_job(data_dir, fbank)
    combine_fbank_jobs(fbank, 1)
    for f in ("wav.scp", "text", "utt2spk", "spk2utt"):
        shutil.copy(data_dir / f, fbank / f)
    config = tmp_path / "enc.yaml"
    config.write_text(yaml.safe_dump(CONFORMER))

    proc = run_stages(tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    enc = tmp_path / "dump" / "enc_last" / "train"
    assert sorted(read_feats_scp(enc / "feats.scp")) == sorted(UTTS)
    assert (enc / ".done").is_file() and (enc / ".backup" / "dropped.txt").is_file()  # filtered as in stage 4
    assert (enc / "text").read_text() == (data_dir / "text").read_text()
    assert yaml.safe_load((enc / "dump_info.yaml").read_text())["dim"] == 16
    units_dir = tmp_path / "dump" / "enc_last" / "units3"
    units, dedup = read_units(units_dir / "train" / "units"), read_units(units_dir / "train" / "units_dedup")
    assert sorted(units) == sorted(UTTS) and all(0 <= u < 3 for seq in units.values() for u in seq)
    assert all(len(dedup[u]) <= len(units[u]) for u in units)

    again = run_stages(tmp_path, config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skip: " in again.stderr and "features of train exist" in again.stderr
    assert "kmeans.pt exists" in again.stderr and "units exists" in again.stderr


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm", "whisper"])
def test_tiny_config_trains_a_step_with_the_registered_encoder(family):
    """The tiny configs run the code path of the large ones; skipped until the family is registered."""
    import torch

    from speechllm.data.dataset import collate_asr
    from speechllm.nets.encoders import ENCODERS
    from speechllm.tasks.asr import build_model, resolve_input

    tiny, large = (yaml.safe_load((TUNING / f"train_{family}_{size}.yaml").read_text()) for size in ("tiny", "large"))
    assert tiny["encoder"] == large["encoder"] == family and "model_config" in tiny["encoder_conf"]
    assert "/" in large["encoder_conf"]["model"]  # a hub id
    if family not in ENCODERS:
        pytest.skip(f"encoder {family!r} is not registered yet")
    torch.manual_seed(0)
    model = build_model(tiny, vocab_size=10)
    g = torch.Generator().manual_seed(0)
    if resolve_input(tiny) == "raw":
        feats = [0.1 * torch.randn(n, generator=g) for n in (16000, 12000)]
    else:
        feats = [torch.randn(n, int(tiny.get("input_size", 80)), generator=g) for n in (100, 75)]
    items = [{"utt_id": f"u{i}", "feats": f, "ys": torch.tensor([2, 3, 4])} for i, f in enumerate(feats)]
    loss, stats = model(collate_asr(items))
    loss.backward()
    assert torch.isfinite(loss) and "loss_ctc" in stats
