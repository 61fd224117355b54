"""Scoring: WER/CER after the one normalizer (:mod:`.wer`) and the RESULTS.md writer (:mod:`.results`)."""
from speechllm.scoring.results import collect_rows, write_results_md
from speechllm.scoring.wer import score_dir, score_texts

__all__ = ["collect_rows", "score_dir", "score_texts", "write_results_md"]
