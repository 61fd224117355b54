"""MTBI: multi-task behavior imitation with speech-text interleaving (issue 5; docs/mtbi.md).

* :mod:`speechllm.mtbi.targets`: the frozen LLM's answers to task prompts about transcripts.
* :mod:`speechllm.mtbi.interleave`: user turns with some words as speech (encoder-frame spans from
  the word alignments of :mod:`speechllm.align`) and the rest as text.
* :mod:`speechllm.mtbi.evaluate`: scoring the speech model's answers against the targets.
"""
