#!/usr/bin/env bash
# Mini synthetic-speech ASR recipe: from nothing to RESULTS.md on a CPU.
# The corpus is made offline from public-domain KJV verses spoken by Debian TTS voices
# (see local/data.sh). Speed perturbation is off: the corpus already varies speaking rate and
# tripling each epoch would not fit the 45-minute CPU budget. Stage 5b trains a small LM on the KJV
# text without the dev/test verses (conf/train_lm.yaml, ~4 min), and every test set is decoded
# without and with it (conf/decode_lm.yaml: shallow fusion, weights chosen from the dev decodings
# of --lm_tune_set). Both models train with bf16 autocast (fast on CPUs with AVX512-BF16/AMX;
# elsewhere use --asr_args "--amp_dtype none" --lm_args "--amp_dtype none"). Real human
# speech test sets are added when $REALSPEECH (db.sh, by default ../shared/data/realspeech beside
# the repository) exists.
#   ./run.sh                         # every stage
#   ./run.sh --stage 6 --stop_stage 8 --asr_args "--max_epoch 2"
#   ./run.sh --use_lm false          # no LM: stage 5b skips, one decoding per test set
set -euo pipefail
export RECIPE_CMD="./run.sh $*"
. ./path.sh
. ./db.sh

test_sets="test"
if [ -d "${REALSPEECH}" ]; then
    test_sets+=" test_real_librivox test_real_librispeech test_real_ljspeech test_real_jfk"
else
    echo "run.sh: no real speech at ${REALSPEECH}; only the synthetic test set is scored" >&2
fi

./asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "${test_sets}" \
    --local_data_opts "--realspeech_dir ${REALSPEECH}" \
    --asr_config conf/train.yaml \
    --inference_config conf/decode.yaml \
    --token_type bpe \
    --nbpe 200 \
    --speed_perturb_factors "" \
    --use_lm true \
    --lm_tune_set dev \
    --lm_tune_grid "0.3:0.5 0.5:0.3 0.5:0.5 0.5:0.7 0.5:0.9" \
    "$@"
