#!/usr/bin/env bash
# Mini MTBI recipe on the CPU (multi-task behavior imitation with speech-text interleaving; README.md,
# docs/mtbi.md): the ASR-only speech LLM, MTBI, MTBI with interleaving (and the ablations of
# conf/systems.yaml) trained on the same data with the same budget, compared on WER and on the
# task-prompt benchmark in RESULTS.md. It shares the corpus, features and ASR model of ../asr1 and
# the mini LLM and prompt set of ../sllm1, and runs those recipes first when their outputs are missing.
#   ./run.sh                                               # the table: 7 systems, every stage
#   ./run.sh --systems "asr_only mtbi mtbi_il mtbi_il_kl"   # the LoRA family instead
#   ./run.sh --stage 4 --sllm_args "--max_epoch 2" --expdir exp_ep2 --results_md RESULTS_ep2.md   # another budget
set -euo pipefail
export RECIPE_CMD="./run.sh $*"
. ./path.sh
. ./db.sh

asr_recipe=../asr1
sllm_recipe=../sllm1
asr_exp=${asr_recipe}/exp/asr_train_bpe200
llm=${sllm_recipe}/exp/llm_lm_pretrain/hf
if [ ! -f "${asr_exp}/valid.acc.ave.pt" ]; then
    echo "run.sh: no ASR model at ${asr_exp}/valid.acc.ave.pt: running ${asr_recipe}/run.sh first" >&2
    (cd "${asr_recipe}" && ./run.sh)
fi
if [ ! -f "${llm}/config.json" ]; then
    echo "run.sh: no mini LLM at ${llm}: running ${sllm_recipe}/run.sh --stop_stage 4 first" >&2
    (cd "${sllm_recipe}" && ./run.sh --stop_stage 4)
fi

# Stage 4 trains two systems at a time, each on its half of the cores: on 2 cores, two 1-thread
# trainings do 1.21x the work of one 2-thread training (bench/results/sllm_jobs_cpu.md).
# The benchmark runs on dev too: its table is where a setting (ratio, tasks, epochs) is chosen,
# so that the test table reports it without having been looked at for the choice.
test_sets="test"
if [ -d "${REALSPEECH}" ]; then
    test_sets+=" test_real_librivox test_real_librispeech test_real_ljspeech test_real_jfk"
fi

./mtbi.sh \
    --data_dir "${asr_recipe}/data" \
    --feats_dir "${asr_recipe}/dump/fbank" \
    --feats_type fbank \
    --train_set train \
    --valid_set dev \
    --test_sets "${test_sets}" \
    --mtbi_test_sets "dev test" \
    --data_recipe "${asr_recipe}" \
    --asr_exp "${asr_exp}" \
    --asr_token_dir "${asr_recipe}/data/token_list/bpe200" \
    --encoder_init "${asr_exp}/valid.acc.ave.pt" \
    --llm "${llm}" \
    --llm_recipe "${sllm_recipe} (its stage 4)" \
    --systems_file conf/systems.yaml \
    --systems "asr_only asr_only_ctc_text mtbi_ctc_text mtbi_il_ctc_text mtbi_il_ctc_text_2tasks mtbi_il_ctc_text_r03 mtbi_il_ctc_text_r07" \
    --train_jobs 2 \
    --table_references "asr_only mtbi_il_ctc_text" \
    --train_per_utt 5 \
    --train_targets_opts "--exclude_tasks repeat,transcribe" \
    --eval_per_utt 9 \
    --inference_config conf/decode_sllm.yaml \
    --mtbi_inference_config conf/decode_mtbi.yaml \
    --results_extra_exp_dirs "${asr_recipe}/exp" \
    "$@"
