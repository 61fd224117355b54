#!/usr/bin/env bash
# LibriSpeech 960 h MTBI recipe for GPU machines (README.md, docs/mtbi.md): the ASR-only speech LLM,
# MTBI and MTBI with speech-text interleaving (and the ablations of conf/systems.yaml), Whisper
# large-v3 -> Qwen2.5-1.5B-Instruct with LoRA, trained on the same data with the same budget and
# compared on WER and on the task-prompt benchmark. The data dirs are ../sllm1's (its stages 1-3).
#   ./run.sh --ngpu 8 --systems "asr_only mtbi"            # no word alignment needed
#   ./run.sh --ngpu 8 --asr_exp ../asr1/exp/asr_x --asr_token_dir ../asr1/data/token_list/bpe5000 \
#       --align_feats_dir ../asr1/dump/fbank               # + MTBI with interleaving (the default systems)
set -euo pipefail
export RECIPE_CMD="./run.sh $*"
. ./path.sh
. ./db.sh

# The interleaving systems need word times: a CTC model of the asr1 template trained on LibriSpeech
# (--asr_exp, --asr_token_dir, and --align_feats_dir when it reads fbank); see README.md. The
# benchmark runs on dev_clean too, the set on which settings are chosen.
./mtbi.sh \
    --data_dir ../sllm1/data \
    --feats_type raw \
    --train_set train_960 \
    --valid_set dev_clean \
    --test_sets "test_clean test_other" \
    --mtbi_test_sets "dev_clean test_clean test_other" \
    --data_recipe "../sllm1 (stages 1-3)" \
    --asr_recipe "an asr1 recipe on LibriSpeech" \
    --systems_file conf/systems.yaml \
    --systems "asr_only mtbi mtbi_il" \
    --nj 1 \
    --train_per_utt 4 \
    --eval_per_utt 12 \
    --targets_opts "--dtype bfloat16 --batch_size 64" \
    --inference_config conf/decode_sllm.yaml \
    --mtbi_inference_config conf/decode_mtbi.yaml \
    --inference_nj 8 \
    "$@"
