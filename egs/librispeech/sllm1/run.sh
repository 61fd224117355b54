#!/usr/bin/env bash
# LibriSpeech 960 h speech LLM: Whisper large-v3 encoder (frozen) -> linear projector ->
# Qwen2.5-1.5B-Instruct with LoRA, fine-tuned for ASR. For GPU machines with the corpus
# download (stage 1, ~62 GB) and the two models in the Hugging Face cache or local dirs.
#   ./run.sh --ngpu 8                                   # every stage, DDP over 8 GPUs
#   ./run.sh --ngpu 8 --sllm_config conf/train_sllm_hubert_qwen2.5_7b.yaml   # FSDP for the 7B LLM
#   ./run.sh --stage 6 --test_sets "test_clean" --inference_args "--num_beams 4"
set -euo pipefail
export RECIPE_CMD="./run.sh $*"
. ./path.sh
. ./db.sh

./sllm.sh \
    --train_set train_960 \
    --valid_set dev_clean \
    --test_sets "test_clean test_other dev_other" \
    --feats_type raw \
    --max_dur 30.0 \
    --sllm_config conf/train_sllm_whisper_qwen2.5_1.5b.yaml \
    --inference_config conf/decode_sllm.yaml \
    --inference_nj 8 \
    "$@"
