#!/usr/bin/env bash
# Mini speech-LLM recipe on the CPU: the ASR fine-tuned speech LLM on the mini synthetic corpus.
# It shares the corpus, features and encoder of ../asr1 (run there first when missing), pretrains
# a small LLM offline (stage 4; no LLM can be downloaded here), trains the projector and LoRA
# (stage 5), decodes and scores; RESULTS.md also lists ../asr1's rows, the baseline it is
# compared with.
#   ./run.sh                          # every stage (runs ../asr1/run.sh first if needed)
#   ./run.sh --stage 5 --sllm_args "--max_epoch 2"
set -euo pipefail
export RECIPE_CMD="./run.sh $*"
. ./path.sh
. ./db.sh

asr_recipe=../asr1
asr_model=${asr_recipe}/exp/asr_train_bpe200/valid.acc.ave.pt
if [ ! -f "${asr_model}" ]; then
    echo "run.sh: no ASR model at ${asr_model}: running ${asr_recipe}/run.sh first" >&2
    (cd "${asr_recipe}" && ./run.sh)
fi

test_sets="test"
if [ -d "${REALSPEECH}" ]; then
    test_sets+=" test_real_librivox test_real_librispeech test_real_ljspeech test_real_jfk"
fi

./sllm.sh \
    --data_dir "${asr_recipe}/data" \
    --feats_dir "${asr_recipe}/dump/fbank" \
    --train_set train \
    --valid_set dev \
    --test_sets "${test_sets}" \
    --feats_type fbank \
    --llm_pretrain_config conf/lm_pretrain.yaml \
    --llm_prompts conf/prompts/mini_tasks.yaml \
    --encoder_init "${asr_model}" \
    --sllm_config conf/train_sllm.yaml \
    --inference_config conf/decode_sllm.yaml \
    --results_extra_exp_dirs "${asr_recipe}/exp" \
    "$@"
