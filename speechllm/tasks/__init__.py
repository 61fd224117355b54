"""Task build paths: config dict -> model. ``speechllm.tasks.asr.build_model`` for ASR."""
