"""An external LM for shallow fusion: next-token log-probabilities of a causal LM over the ASR tokens.

The beam searches of :mod:`speechllm.search.beam_search` take as ``lm`` any object with

    score_batch(ys, cache=None, lengths=None) -> (log_probs [N, V], cache or None)

* ``ys [N, L]``: token prefixes, ``<sos>`` first; ``log_probs[n]`` is ``log p(. | ys[n])``.
* ``cache``: what the previous call returned for the same prefixes one token shorter, reordered
  like the hypotheses with ``cache.select(index)``; only ``ys[:, -1]`` is new then. None: the
  whole prefixes are run. A scorer without a cache returns None and gets None back.
* ``lengths [N]``: rows of different lengths, right-padded; each is scored after its last
  token (no cache). The frame-synchronous CTC search uses this.

:class:`CausalLMScorer` is that for the Hugging Face causal LM of ``--task lm`` trained on the
ASR token list (``speechllm.tasks.lm.load_unit_lm``), using the model's key/value cache.
"""
from __future__ import annotations

import torch
from torch import nn


class LMCache:
    """The Hugging Face key/value cache of ``length`` tokens per row."""

    def __init__(self, past, length: int) -> None:
        self.past, self.length = past, length

    def select(self, index: torch.Tensor) -> "LMCache":
        """Rows ``index`` (row ``i`` becomes row ``index[i]``); reorders the cache in place."""
        self.past.reorder_cache(index)
        return self


class CausalLMScorer:
    """``score_batch`` (see the module docstring) around a ``transformers`` causal LM."""

    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm.eval()
        self.vocab_size = int(lm.config.vocab_size)

    @torch.no_grad()
    def score_batch(self, ys: torch.Tensor, cache: LMCache | None = None,
                    lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, LMCache | None]:
        if lengths is not None:
            # Causal attention: the padding after a row's last token does not change its scores.
            logits = self.lm(input_ids=ys, use_cache=False).logits
            last = logits[torch.arange(ys.size(0), device=ys.device), lengths.to(ys.device) - 1]
            return torch.log_softmax(last.float(), dim=-1), None
        if cache is None:
            out = self.lm(input_ids=ys, use_cache=True)
        else:
            if cache.length != ys.size(1) - 1:
                raise ValueError(f"LM cache holds {cache.length} tokens but ys has {ys.size(1)}; expected one more")
            out = self.lm(input_ids=ys[:, -1:], past_key_values=cache.past, use_cache=True)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1), LMCache(out.past_key_values, ys.size(1))
