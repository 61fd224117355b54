"""A small waveform encoder that follows the pretrained-encoder contract, for tests that must
not depend on Hugging Face models being registered (or downloaded).

Contract (speechllm/nets/encoders): ``input_kind``; ``forward(x, lengths) -> (out[B, T', D],
out_lens)``; ``output_size()``; ``frame_rate()``; ``hidden_states(x, lengths) -> (list of every
layer's [B, T', D], out_lens)``; built from ``model_config`` (tiny, random) or ``model`` (a hub
id: not available here); ``layer: int | None | "weighted_sum"``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from speechllm.nets.encoders import ENCODERS


class FakeSSLEncoder(nn.Module):
    """Conv1d framing (25 ms window, 20 ms hop at 16 kHz) + ``num_hidden_layers`` tanh layers."""

    input_kind = "waveform"
    WINDOW, HOP = 400, 320

    def __init__(self, input_size: int = 80, model_config: dict | None = None, model: str | None = None,
                 layer: int | str | None = None) -> None:
        super().__init__()
        if model is not None:
            raise ValueError("FakeSSLEncoder cannot load pretrained models")
        cfg = dict(model_config or {})  # real HF config kwargs (conv_dim, ...) are accepted and ignored
        self.hidden = int(cfg.get("hidden_size", 16))
        self.frontend = nn.Conv1d(1, self.hidden, self.WINDOW, stride=self.HOP)
        self.layers = nn.ModuleList(nn.Linear(self.hidden, self.hidden) for _ in range(int(cfg.get("num_hidden_layers", 2))))
        self.layer = layer
        if layer == "weighted_sum":
            self.layer_weights = nn.Parameter(torch.zeros(len(self.layers) + 1))

    def output_size(self) -> int:
        return self.hidden

    def frame_rate(self) -> float:
        return 16000 / self.HOP

    def hidden_states(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        out_lens = torch.clamp(torch.div(lengths - self.WINDOW, self.HOP, rounding_mode="floor") + 1, min=0)
        h = self.frontend(x.unsqueeze(1)).transpose(1, 2)
        valid = (torch.arange(h.size(1), device=x.device)[None, :] < out_lens[:, None]).unsqueeze(-1).to(h.dtype)
        states = [h * valid]
        for lin in self.layers:
            h = torch.tanh(lin(h)) * valid
            states.append(h)
        return states, out_lens

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, out_lens = self.hidden_states(x, lengths)
        if self.layer == "weighted_sum":
            w = torch.softmax(self.layer_weights, 0)
            return sum(wi * s for wi, s in zip(w, states)), out_lens
        return states[-1 if self.layer is None else int(self.layer)], out_lens


@pytest.fixture
def fake_encoders(monkeypatch) -> dict:
    """Register ``fake_ssl`` (and ``hubert``/``precomputed`` while the real ones are not registered)."""
    from speechllm.nets.encoders.precomputed import PrecomputedEncoder

    monkeypatch.setitem(ENCODERS, "fake_ssl", FakeSSLEncoder)
    if "hubert" not in ENCODERS:
        monkeypatch.setitem(ENCODERS, "hubert", FakeSSLEncoder)
    if "precomputed" not in ENCODERS:
        monkeypatch.setitem(ENCODERS, "precomputed", PrecomputedEncoder)
    return ENCODERS
