"""Tiny ASR model configs shared by the nets/models/search tests (fast on 2 CPU cores)."""
from __future__ import annotations

import torch

from speechllm.tasks.asr import build_model

INPUT_SIZE = 20
VOCAB = 12  # 0 <blank>, 1 <unk>, 2..10 tokens, 11 <sos/eos>


def tiny_config(ctc_weight: float = 0.3, **extra) -> dict:
    """A 2-block Conformer + 2-block Transformer decoder of dimension 32."""
    cfg = {
        "input_size": INPUT_SIZE,
        "encoder": "conformer",
        "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
                         "cnn_module_kernel": 5, "dropout_rate": 0.0, "positional_dropout_rate": 0.0},
        "decoder": "transformer",
        "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 2, "dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0},
        "model_conf": {"ctc_weight": ctc_weight, "lsm_weight": 0.1},
    }
    cfg.update(extra)
    return cfg


def tiny_model(ctc_weight: float = 0.3, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_config(ctc_weight), VOCAB)


def random_batch(lengths: list[int], label_lengths: list[int], seed: int = 0) -> dict:
    """A collate_asr-style batch: zero-padded feats, ys padded with -1."""
    g = torch.Generator().manual_seed(seed)
    B, T, L = len(lengths), max(lengths), max(label_lengths)
    feats = torch.zeros(B, T, INPUT_SIZE)
    ys = torch.full((B, L), -1, dtype=torch.long)
    for b, (t, n) in enumerate(zip(lengths, label_lengths)):
        feats[b, :t] = torch.randn(t, INPUT_SIZE, generator=g)
        ys[b, :n] = torch.randint(2, VOCAB - 1, (n,), generator=g)
    return {"utt_ids": [f"utt{b}" for b in range(B)], "feats": feats, "feats_lens": torch.tensor(lengths),
            "ys": ys, "ys_lens": torch.tensor(label_lengths)}


def fitted_tiny_model(steps: int = 60):
    """A tiny model fitted for ``steps`` steps to 4 utterances (about 0.5 s), so that decoding has
    hypotheses of different lengths that end by themselves; encoded with 2 unseen utterances.

    Returns ``(model, enc, enc_lens, ctc_log_probs, train_batch)`` (6 utterances, the first 4 seen).
    """
    model = tiny_model(ctc_weight=0.3, seed=3)
    train = random_batch([72, 55, 40, 28], [7, 5, 4, 2], seed=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = model(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    unseen = random_batch([64, 33], [1, 1], seed=9)
    feats = torch.zeros(6, 72, train["feats"].size(2))
    feats[:4], feats[4:, :64] = train["feats"], unseen["feats"]
    lens = torch.cat([train["feats_lens"], unseen["feats_lens"]])
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        ctc_logp = model.ctc.log_softmax(enc)
    return model, enc, enc_lens, ctc_logp, train


def random_lm(vocab: int = VOCAB, seed: int = 7):
    """A random 1-layer Llama over ``vocab`` token ids (``<sos/eos>`` = ``vocab - 1``) with large
    initial weights, so that its next-token distributions are far from uniform."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=32, initializer_range=0.3,
                         bos_token_id=vocab - 1, eos_token_id=vocab - 1, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def write_model_dir(model_dir, corpus_lines: list[str], config: dict, model_type: str = "char",
                    vocab_size: int | None = None, seed: int = 0):
    """A packed-style model dir from a random model of ``config``: the tokenizer trained on
    ``corpus_lines`` (tokens.txt, tokenizer.model), config.yaml and model.pt. Returns the
    sentencepiece model path and the token list path."""
    from pathlib import Path

    import yaml

    from speechllm.text.tokenizer import read_token_list, train_tokenizer

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    corpus = model_dir.parent / f"{model_dir.name}_corpus.txt"
    corpus.write_text("".join(line + "\n" for line in corpus_lines))
    spm_model, tokens = train_tokenizer(corpus, model_dir, model_type=model_type, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = build_model(config, len(read_token_list(tokens)))
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"model": model.state_dict(), "epoch": 1}, model_dir / "model.pt")
    return spm_model, tokens


def write_feats_dir(data_dir, frames: dict[str, int], dim: int = INPUT_SIZE, seed: int = 0):
    """A data dir with random features (feats.ark/feats.scp) of ``frames[utt]`` frames each."""
    from pathlib import Path

    import kaldiio
    import numpy as np

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with kaldiio.WriteHelper(f"ark,scp:{data_dir / 'feats.ark'},{data_dir / 'feats.scp'}") as w:
        for utt, n in frames.items():
            w(utt, rng.standard_normal((n, dim)).astype(np.float32))
    return data_dir
