"""Word alignment: word start/end times of transcripts, written as Kaldi CTM files.

``ALIGNERS`` picks an aligner by name (``ctc``: forced alignment on the CTC head of a trained ASR
model); ``python -m speechllm.bin.align_words`` writes a data dir's ``word_align``, which
:func:`read_ctm` reads back. The MTBI interleaving (:mod:`speechllm.mtbi.interleave`) turns the
times into encoder-frame spans.
"""
from speechllm.align.ctc_align import (
    ALIGNERS,
    AlignmentError,
    CTCAligner,
    WordTime,
    align_words,
    read_ctm,
    word_token_ids,
    write_ctm,
)

__all__ = ["ALIGNERS", "AlignmentError", "CTCAligner", "WordTime", "align_words", "read_ctm", "word_token_ids",
           "write_ctm"]
