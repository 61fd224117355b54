"""speechllm: a speech toolkit for ASR, AST and TTS built around speech LLMs."""

__version__ = "0.1.0"
