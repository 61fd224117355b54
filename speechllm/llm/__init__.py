"""The decoder-only LLM side of the speech LLM: loading (hub id, local dir, tiny random config),
chat-template prompting with audio placeholders, freezing, LoRA and merged export.

* :mod:`speechllm.llm.loading`    ``load_causal_lm``, ``load_tokenizer``, ``build_causal_lm_from_config``
* :mod:`speechllm.llm.prompting`  ``AUDIO_PLACEHOLDER``, ``PromptPieces``, ``render_prompt_pieces``,
  ``response_ids``, ``stop_token_ids``
* :mod:`speechllm.llm.adapters`   ``apply_freezing``, ``apply_lora``, ``merge_and_export``
"""
