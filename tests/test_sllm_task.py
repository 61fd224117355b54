"""The speech-LLM task end to end on tiny parts: ``train --task sllm`` (encoder from an ASR
checkpoint, LoRA, trainable-only checkpoints), ``sllm_inference`` in jobs, ``sllm_export``."""
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from asr_toys import INPUT_SIZE, VOCAB, tiny_config
from sllm_toys import make_tiny_llm
from speechllm.bin import sllm_export, sllm_inference, train
from speechllm.llm.loading import load_tokenizer
from speechllm.tasks import sllm
from speechllm.tasks.asr import build_model as build_asr_model
from speechllm.train.checkpoint import load_model_state_dict
from speechllm.utils.config import ConfigError

TEXTS = ["and god said let there be light", "the earth was without form", "in the beginning",
         "and there was light", "god created the heaven", "and the earth"]


def write_feats_dir(path: Path, utts: dict[str, str], seed: int) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with kaldiio.WriteHelper(f"ark,scp:{path / 'feats.ark'},{path / 'feats.scp'}") as w:
        for i, utt in enumerate(sorted(utts)):
            w(utt, rng.standard_normal((40 + 7 * i, INPUT_SIZE)).astype(np.float32))
    (path / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(utts.items())))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sllm_task")
    llm_dir = make_tiny_llm(root / "llm")
    asr_config = tiny_config()
    torch.manual_seed(1)
    asr = build_asr_model(asr_config, VOCAB)
    torch.save({"model": asr.state_dict()}, root / "asr.pt")
    train_dir = write_feats_dir(root / "train", {f"tr{i}": t for i, t in enumerate(TEXTS)}, 0)
    dev_dir = write_feats_dir(root / "dev", {f"dv{i}": t for i, t in enumerate(TEXTS[:3])}, 1)
    config = {
        "input_size": INPUT_SIZE, "encoder": "conformer", "encoder_conf": asr_config["encoder_conf"],
        "encoder_init": str(root / "asr.pt"),
        "projector": "linear", "projector_conf": {"downsample": 2, "hidden_size": 32},
        "llm": llm_dir, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "freeze": ["encoder.*"],
        "prompts": {"wordings": ["Transcribe the audio: {text}", "Write it down. {text}"]},
        "max_epoch": 2, "batch_bins": 200, "num_workers": 0, "optim": "adamw", "optim_conf": {"lr": 0.003},
        "keep_nbest_models": 2, "log_interval": 1,
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    exp = root / "exp"
    assert train.main(["--task", "sllm", "--config", str(root / "train.yaml"), "--train_data_dir", str(train_dir),
                       "--valid_data_dir", str(dev_dir), "--exp_dir", str(exp)]) == 0
    return root, exp, asr, dev_dir


def test_checkpoint_holds_only_projector_and_lora(setup):
    _, exp, _, _ = setup
    state = load_model_state_dict(exp / "valid.acc.ave.pt")
    assert state and all(k.startswith("projector.") or "lora_" in k for k in state), sorted(state)[:5]
    assert any("lora_A" in k for k in state)
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["input"] == "fbank" and saved["task"] == "sllm"


def test_encoder_starts_from_the_asr_checkpoint(setup):
    _, exp, asr, _ = setup
    model = sllm.build_model(yaml.safe_load((exp / "config.yaml").read_text()))
    for name, value in asr.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], value), name
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_encoder_init_with_another_encoder_is_a_config_error(setup, tmp_path):
    root, exp, _, _ = setup
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["encoder_conf"] = {**config["encoder_conf"], "num_blocks": 3}
    with pytest.raises(ConfigError, match="encoder_init"):
        sllm.build_model(config)


@pytest.mark.parametrize("change, message", [
    ({"num_blocks": 1}, "weights this encoder_conf lacks"),  # would load the first block silently
    ({"subsampling_channels": 3}, "weights of another shape"),
])
def test_encoder_init_with_a_smaller_or_reshaped_encoder_is_a_config_error(setup, change, message):
    _, exp, _, _ = setup
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["encoder_conf"] = {**config["encoder_conf"], **change}
    with pytest.raises(ConfigError, match=message):
        sllm.build_model(config)


def decode(args: list[str]) -> None:
    assert sllm_inference.main(args) == 0


def test_jobs_decode_every_utterance_deterministically(setup, tmp_path):
    _, exp, _, dev_dir = setup
    common = ["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"), "--data_dir", str(dev_dir),
              "--nj", "2", "--max_new_tokens_base", "3", "--max_new_tokens_per_second", "10"]
    for job in (1, 2):
        decode(common + ["--output_dir", str(tmp_path / "a"), "--job", str(job)])
    decode(common + ["--output_dir", str(tmp_path / "b"), "--job", "1"])
    ids = [line.split()[0] for j in (1, 2) for line in (tmp_path / "a" / f"text.{j}").read_text().splitlines()]
    assert sorted(ids) == ["dv0", "dv1", "dv2"]
    assert (tmp_path / "a" / "text.1").read_text() == (tmp_path / "b" / "text.1").read_text()
    for line in (tmp_path / "a" / "gen_info.1").read_text().splitlines():
        utt, n, stopped = line.split()
        frames = {"dv0": 40, "dv1": 47, "dv2": 54}[utt]
        assert int(n) <= int(3 + 10 * frames * 0.01) and stopped in ("0", "1")


def export_and_compare_decodings(exp: Path, checkpoint: Path, dev_dir: Path, tmp_path: Path) -> Path:
    """Export the model, decode dev from the experiment and from the export; the texts must match."""
    assert sllm_export.main(["--exp_dir", str(exp), "--checkpoint", str(checkpoint),
                             "--out_dir", str(tmp_path / "export")]) == 0
    common = ["--data_dir", str(dev_dir), "--max_new_tokens_base", "4", "--max_new_tokens_per_second", "10"]
    decode(common + ["--exp_dir", str(exp), "--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "exp_out")])
    decode(common + ["--model_dir", str(tmp_path / "export"), "--output_dir", str(tmp_path / "export_out")])
    assert (tmp_path / "exp_out" / "text.1").read_text() == (tmp_path / "export_out" / "text.1").read_text()
    return tmp_path / "export"


def test_export_decodes_like_the_experiment(setup, tmp_path):
    _, exp, _, dev_dir = setup
    export = export_and_compare_decodings(exp, exp / "valid.acc.ave.pt", dev_dir, tmp_path)
    assert (export / "llm" / "config.json").is_file()


def test_bad_prompt_and_unknown_option_are_clear_errors(setup, tmp_path, capsys):
    _, exp, _, dev_dir = setup
    base = ["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"), "--data_dir", str(dev_dir),
            "--output_dir", str(tmp_path)]
    assert sllm_inference.main(base + ["--prompt", "no placeholder"]) == 1
    assert "{text}" in capsys.readouterr().err
    (tmp_path / "dec.yaml").write_text("beam_size: 3\n")
    assert sllm_inference.main(base + ["--config", str(tmp_path / "dec.yaml")]) == 1
    assert "unknown decoding option" in capsys.readouterr().err


def test_specaug_stays_active_in_front_of_a_frozen_encoder(setup):
    _, exp, asr, _ = setup
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config.update(specaug=True, specaug_conf={"num_freq_masks": 2, "max_freq_width": 3, "num_time_masks": 2,
                                              "max_time_width": 5})
    model = sllm.build_model(config)
    for name, value in asr.encoder.state_dict().items():  # wrapped, still initialized from the ASR model
        assert torch.equal(model.encoder.encoder.state_dict()[name], value), name
    feats = torch.randn(2, 60, INPUT_SIZE)
    lens = torch.tensor([60, 45])
    model.train()
    assert model.encoder.specaug.training and not model.encoder.encoder.training  # frozen encoder: no dropout
    torch.manual_seed(0)
    a, _ = model.encoder(feats, lens)
    torch.manual_seed(1)
    b, _ = model.encoder(feats, lens)
    assert not torch.equal(a, b)  # different masks
    model.eval()
    assert not model.encoder.specaug.training
    c, _ = model.encoder(feats, lens)
    d, _ = model.encoder(feats, lens)
    assert torch.equal(c, d)
    e, _ = asr.eval().encoder(feats, lens)
    assert torch.allclose(c, e)  # no augmentation at inference


def test_ctc_pool_reads_the_encoders_asr_head_and_survives_export(setup, tmp_path):
    # the MTBI configuration of the paper: frozen LLM (no LoRA), only the token-rate projector trains
    root, exp, asr, dev_dir = setup
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config.update(projector="ctc_pool", projector_conf={"hidden_size": 16}, lora=None,
                  freeze=["encoder.*", "llm.*"])
    model = sllm.build_model(config).eval()
    assert torch.equal(model.projector.ctc_weight, asr.ctc.ctc_lo.weight)  # ctc_init = encoder_init
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"projector"}
    torch.save({"model": model.checkpoint_state_dict()}, tmp_path / "ckpt.pt")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "config.yaml").write_text(yaml.safe_dump(config))
    export = export_and_compare_decodings(tmp_path / "exp", tmp_path / "ckpt.pt", dev_dir, tmp_path)
    exported = yaml.safe_load((export / "config.yaml").read_text())
    assert exported["projector_conf"] == {"hidden_size": 16, "vocab_size": VOCAB}


def test_ctc_text_trains_its_head_with_the_llm_frozen_and_survives_export(setup, tmp_path, capfd):
    # frozen LLM, only the soft-text projector trains; its CTC loss reads the transcripts in the
    # LLM's tokens (transcript_ids, from the training collate)
    root, exp, _, dev_dir = setup
    config = yaml.safe_load((root / "train.yaml").read_text())
    config.update(projector="ctc_text", projector_conf={"hidden_size": 16}, lora=None,
                  freeze=["encoder.*", "llm.*"], max_epoch=1)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    ctc_exp = tmp_path / "exp"
    assert train.main(["--task", "sllm", "--config", str(tmp_path / "train.yaml"), "--train_data_dir",
                       str(root / "train"), "--valid_data_dir", str(dev_dir), "--exp_dir", str(ctc_exp)]) == 0
    assert "loss_ctc" in capfd.readouterr().err
    model = sllm.build_model(config)
    llm_embed = model.llm.get_input_embeddings()
    assert model.projector.vocab_size == llm_embed.num_embeddings
    assert model.projector._llm_embedding[0] is llm_embed
    state = load_model_state_dict(ctc_exp / "valid.acc.ave.pt")
    assert {k.split(".")[1] for k in state} == {"head"}, sorted(state)  # no residual by default
    export = export_and_compare_decodings(ctc_exp, ctc_exp / "valid.acc.ave.pt", dev_dir, tmp_path)
    assert yaml.safe_load((export / "config.yaml").read_text())["projector"] == "ctc_text"
    # the same model read as hard text at decoding (the head's greedy tokens)
    decode(["--model_dir", str(export), "--data_dir", str(dev_dir), "--output_dir", str(tmp_path / "hard"),
            "--projector_mix", "hard", "--max_new_tokens_base", "4", "--max_new_tokens_per_second", "10"])
    assert "projector_mix: hard" in (tmp_path / "hard" / "decode_config.yaml").read_text()
    assert "projector mix: hard" in capfd.readouterr().err


def test_lora_scale_decodes_and_needs_lora(setup, tmp_path, capsys):
    _, exp, _, dev_dir = setup
    common = ["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"), "--data_dir", str(dev_dir),
              "--max_new_tokens_base", "4", "--max_new_tokens_per_second", "10"]
    decode(common + ["--output_dir", str(tmp_path / "full")])
    decode(common + ["--output_dir", str(tmp_path / "half"), "--lora_scale", "0.5"])
    assert "lora_scale: 0.5" in (tmp_path / "half" / "decode_config.yaml").read_text()
    assert sllm_export.main(["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"),
                             "--out_dir", str(tmp_path / "export")]) == 0
    assert sllm_inference.main(["--model_dir", str(tmp_path / "export"), "--data_dir", str(dev_dir),
                                "--output_dir", str(tmp_path / "x"), "--lora_scale", "0.5"]) == 1
    assert "no LoRA layers" in capsys.readouterr().err


def test_projector_mix_needs_a_ctc_text_projector(setup, tmp_path, capsys):
    _, exp, _, dev_dir = setup
    assert sllm_inference.main(["--exp_dir", str(exp), "--checkpoint", str(exp / "valid.acc.ave.pt"),
                                "--data_dir", str(dev_dir), "--output_dir", str(tmp_path / "x"),
                                "--projector_mix", "hard"]) == 1
    assert "has no mix (only ctc_text has)" in capsys.readouterr().err


def test_encoder_init_with_other_feature_normalization_is_a_config_error(setup, tmp_path):
    """An exp dir's config.yaml beside the checkpoint says how its encoder's features were normalized."""
    root, exp, _, _ = setup
    config = yaml.safe_load((exp / "config.yaml").read_text())
    asr_exp = tmp_path / "asr_exp"
    asr_exp.mkdir()
    shutil.copy(root / "asr.pt", asr_exp / "valid.acc.ave.pt")
    asr_config = {"normalize": "global_mvn", "normalize_conf": {"utterance_mean": True}}
    (asr_exp / "config.yaml").write_text(yaml.safe_dump(asr_config))
    config["encoder_init"] = str(asr_exp / "valid.acc.ave.pt")
    with pytest.raises(ConfigError, match="utterance_mean True .* utterance_mean False"):
        sllm.build_model(config)
    (asr_exp / "config.yaml").write_text(yaml.safe_dump({"normalize": None}))  # the same as config: loads
    assert config.get("normalize") is None
    sllm.build_model(config)


def test_training_collate_draws_each_wording_by_seed_epoch_and_utterance(setup):
    # the same examples for any batching or worker, and after a resume at any step
    root, _, _, _ = setup
    tok = load_tokenizer(str(root / "llm"))
    wordings = [f"Wording {i}: {{text}}" for i in range(8)]
    items = [{"utt_id": f"u{i}", "feats": torch.zeros(5 + i, INPUT_SIZE), "text": "and god said"} for i in range(6)]

    def drawn(seed: int, epoch: int, batches: list[list[int]]) -> dict[str, str]:
        collate = sllm.SpeechLLMCollate(tok, wordings, train=True, seed=seed)
        collate.set_epoch(epoch)
        out = {}
        for batch_items in batches:
            batch = collate([items[i] for i in batch_items])
            for utt, prompt in zip(batch["utt_ids"], batch["prompts"]):
                out[utt] = tok.decode(torch.cat(prompt.text_ids))
        return out

    first = drawn(0, 1, [[0, 1, 2, 3, 4, 5]])
    assert len({w for w in first.values()}) > 1  # drawn, not fixed
    assert drawn(0, 1, [[5, 3], [0, 4, 1], [2]]) == first
    assert drawn(0, 2, [[0, 1, 2, 3, 4, 5]]) != first
    assert drawn(1, 1, [[0, 1, 2, 3, 4, 5]]) != first
    valid = sllm.SpeechLLMCollate(tok, wordings, train=False)(items)
    assert all("Wording 0:" in tok.decode(torch.cat(p.text_ids)) for p in valid["prompts"])  # validation: the first
