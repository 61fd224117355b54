"""Decoding: greedy CTC, CTC prefix scoring, batched joint CTC/attention and CTC beam search."""
from speechllm.search.beam_search import batch_beam_search, ctc_prefix_beam_search
from speechllm.search.ctc_prefix_score import CTCPrefixScorer, CTCPrefixState
from speechllm.search.greedy_ctc import greedy_ctc

__all__ = ["CTCPrefixScorer", "CTCPrefixState", "batch_beam_search", "ctc_prefix_beam_search", "greedy_ctc"]
