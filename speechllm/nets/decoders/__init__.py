"""Decoder registry: ``decoder: NAME`` picks the class, ``decoder_conf`` its kwargs.

Every decoder is built as ``DECODERS[name](vocab_size=..., encoder_output_size=..., **decoder_conf)``
and provides ``forward(memory, memory_lens, ys_in, ys_in_lens) -> logits`` and
``score_batch(ys, memory, memory_mask, cache) -> (log_probs[N, V], cache)``.
"""
from speechllm.nets.decoders.transformer import DecoderCache, TransformerDecoder

DECODERS = {
    "transformer": TransformerDecoder,
}

__all__ = ["DECODERS", "DecoderCache", "TransformerDecoder"]
