"""Text side: sentencepiece tokenizer and token list."""
