"""Transformer attention decoder (pre-norm) with a key/value cache for beam search.

Training: ``forward(memory, memory_lens, ys_in, ys_in_lens) -> logits[B, L, V]`` (teacher forcing,
causal self-attention). Decoding: ``score_batch(ys, memory, memory_mask, cache)`` returns the
log-probabilities of the next token after each prefix in ``ys`` and a :class:`DecoderCache`.

Caching (documented choice): the cache holds, per layer, the projected keys/values of the
self-attention for the tokens already fed, and the projected keys/values of the encoder memory
(computed once per utterance, not once per step). With a cache, a step feeds only the newest
token, so one step costs O(L) attention instead of re-running the whole prefix.

The layers are written here (not ``nn.TransformerDecoderLayer``) because that class cannot take
or return cached keys/values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechllm.nets.positional_encoding import PositionalEncoding


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose key/value projections can be computed once and reused."""

    def __init__(self, d_model: int, heads: int, dropout_rate: float = 0.0) -> None:
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"d_model {d_model} is not divisible by attention_heads {heads}")
        self.heads = heads
        self.d_head = d_model // heads
        self.dropout_rate = dropout_rate
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, Dh]
        return x.view(x.size(0), x.size(1), self.heads, self.d_head).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, H, T, Dh]`` of ``x[B, T, D]``."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def attend(
        self,
        query: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attention of ``query[B, Lq, D]`` over projected ``k, v``; ``mask`` True = may attend."""
        q = self._split(self.q_proj(query))
        p = self.dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(query.size(0), query.size(1), -1))


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, d_model: int, heads: int, linear_units: int, dropout_rate: float,
                 self_attention_dropout_rate: float, src_attention_dropout_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, heads, self_attention_dropout_rate)
        self.norm2 = nn.LayerNorm(d_model)
        self.src_attn = MultiHeadAttention(d_model, heads, src_attention_dropout_rate)
        self.norm3 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, linear_units), nn.ReLU(), nn.Dropout(dropout_rate), nn.Linear(linear_units, d_model)
        )
        self.dropout = nn.Dropout(dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x[B, L, D]`` new positions; ``past_kv`` self-attention keys/values of earlier positions.

        Returns the layer output for the new positions and the self-attention keys/values of all
        positions so far (past + new).
        """
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        # Without a past, the new positions attend causally among themselves. With a past, only
        # one new position is fed, and it may see everything before it.
        causal = past_kv is None and x.size(1) > 1
        if past_kv is not None and x.size(1) != 1:
            raise ValueError("with a cache, feed exactly one new token per step")
        x = x + self.dropout(self.self_attn.attend(h, k, v, causal=causal))
        x = x + self.dropout(self.src_attn.attend(self.norm2(x), *memory_kv, mask=memory_mask))
        x = x + self.dropout(self.feed_forward(self.norm3(x)))
        return x, (k, v)


@dataclass
class DecoderCache:
    """Per-layer keys/values kept between decoding steps; row ``n`` belongs to hypothesis ``n``.

    ``self_kv[l]``: self-attention keys/values ``[N, H, L, Dh]`` of the ``L`` tokens fed so far.
    ``memory_kv[l]``: cross-attention keys/values ``[N, H, T, Dh]`` of the encoder output.
    ``memory_mask``: ``[N, 1, 1, T]`` bool, True at valid encoder frames.
    """

    self_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor

    def select(self, index: torch.Tensor, reindex_memory: bool = True) -> "DecoderCache":
        """Cache for hypotheses ``index`` (row ``i`` of the result is row ``index[i]`` here).

        Beam search reorders hypotheses within each utterance at every step; the encoder keys and
        values of those rows are identical, so it passes ``reindex_memory=False`` then and only
        reindexes them when the set of utterances changes.
        """
        self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv]
        if not reindex_memory:
            return DecoderCache(self_kv, self.memory_kv, self.memory_mask)
        memory_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory_kv]
        return DecoderCache(self_kv, memory_kv, self.memory_mask.index_select(0, index))


class TransformerDecoder(nn.Module):
    """Token embedding + positions + ``num_blocks`` pre-norm decoder layers + output projection.

    Args (ESPnet names):
        vocab_size: output vocabulary V (``<sos/eos>`` = V-1 included).
        encoder_output_size: model dimension; equals the encoder output size.
        attention_heads, linear_units, num_blocks: layer sizes.
        dropout_rate, positional_dropout_rate, self_attention_dropout_rate,
        src_attention_dropout_rate: dropout probabilities.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: int,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        self_attention_dropout_rate: float = 0.0,
        src_attention_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        d = encoder_output_size
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d)
        self.pos_enc = PositionalEncoding(d, positional_dropout_rate)
        self.layers = nn.ModuleList(
            DecoderLayer(d, attention_heads, linear_units, dropout_rate,
                         self_attention_dropout_rate, src_attention_dropout_rate)
            for _ in range(num_blocks)
        )
        self.after_norm = nn.LayerNorm(d)
        self.output_layer = nn.Linear(d, vocab_size)

    def _memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.src_attn.project_kv(memory) for layer in self.layers]

    def _run(
        self,
        ys: torch.Tensor,
        offset: int,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor,
        past: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        # ys[N, L_new] token ids at positions offset..offset+L_new-1 -> logits[N, L_new, V]
        x = self.pos_enc(self.embed(ys), offset=offset)
        new_kv = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, memory_kv[i], memory_mask, None if past is None else past[i])
            new_kv.append(kv)
        return self.output_layer(self.after_norm(x)), new_kv

    def forward(
        self,
        memory: torch.Tensor,
        memory_lens: torch.Tensor,
        ys_in: torch.Tensor,
        ys_in_lens: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced logits ``[B, L, V]`` for ``ys_in[B, L]`` (``<sos>`` + tokens, any padding).

        Padding of ``ys_in`` needs no mask: causal attention keeps valid positions from seeing the
        padded ones after them. ``ys_in_lens`` is accepted for the interface and not needed.
        """
        mask = (torch.arange(memory.size(1), device=memory.device) < memory_lens.unsqueeze(1))
        logits, _ = self._run(ys_in, 0, self._memory_kv(memory), mask[:, None, None, :], None)
        return logits

    def score_batch(
        self,
        ys: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: DecoderCache | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """Log-probabilities ``[N, V]`` of the token following each prefix ``ys[N, L]`` (``<sos>`` first).

        ``memory[N, T, D]`` and ``memory_mask[N, T]`` (bool, True = valid frame) are used only
        when ``cache`` is None: then the whole prefix is run and a cache is built. With the cache
        of the previous step (prefixes one token shorter, rows in the same order), only
        ``ys[:, -1]`` is fed. Returns ``(log_probs, cache)``; the result is the same as
        ``log_softmax(forward(...)[:, -1])`` up to float rounding.
        """
        if cache is None:
            mask = memory_mask[:, None, None, :].bool()
            memory_kv = self._memory_kv(memory)
            logits, self_kv = self._run(ys, 0, memory_kv, mask, None)
            cache = DecoderCache(self_kv, memory_kv, mask)
        else:
            past_len = cache.self_kv[0][0].size(2)
            if past_len != ys.size(1) - 1:
                raise ValueError(f"cache holds {past_len} tokens but ys has {ys.size(1)}; expected one more")
            logits, self_kv = self._run(ys[:, -1:], past_len, cache.memory_kv, cache.memory_mask, cache.self_kv)
            cache = DecoderCache(self_kv, cache.memory_kv, cache.memory_mask)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), cache
