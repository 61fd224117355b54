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
