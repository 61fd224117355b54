"""Trainable models; each ``forward(batch) -> (loss, stats)`` per docs/architecture.md."""
from speechllm.models.ctc_attention import CTCAttentionModel

__all__ = ["CTCAttentionModel"]
