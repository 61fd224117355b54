"""Encoder registry: the YAML key ``encoder: NAME`` picks the class, ``encoder_conf`` its kwargs.

Every encoder is built as ``ENCODERS[name](input_size=..., **encoder_conf)`` and provides
``forward(x, lengths) -> (out[B, T', D], out_lengths)`` and ``output_size()``.
"""
from speechllm.nets.encoders.conformer import ConformerEncoder

ENCODERS = {
    "conformer": ConformerEncoder,
}

__all__ = ["ENCODERS", "ConformerEncoder"]
