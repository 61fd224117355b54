#!/usr/bin/env bash
# Speech-LLM recipe template: encoder -> projector -> decoder-only LLM (LoRA), from a corpus to
# RESULTS.md and a merged model directory. Recipes link this file and pass their options, e.g.
#   ./sllm.sh --train_set train --valid_set dev --test_sets "test" --sllm_config conf/train_sllm.yaml
# Stages (each one skips work that is already done, and says so):
#   1 data preparation (local/data.sh)         5 speech-LLM training
#   2 fbank features + global CMVN stats        6 decoding (batched generate, --inference_nj jobs)
#     (--feats_type fbank; raw-audio encoders   7 scoring (WER/CER, empty and looping outputs)
#      such as Whisper/HuBERT skip it)             and RESULTS.md
#   3 filtering by duration / empty text       8 export: LoRA merged into a standalone model dir
#   4 LLM pretraining (offline recipes only: --llm_pretrain_config; a hub LLM skips it)
# Stages 1-3 are the ASR template's (egs/TEMPLATE/asr1/stages), so a recipe can share its data
# and features with an asr1 recipe of the same corpus.
set -euo pipefail

recipe_cmd=${RECIPE_CMD:-$0 $*}   # recorded in RESULTS.md
help_message="Usage: $0 [--stage N] [--stop_stage M] [--key value ...]; see the variables at the top of $0"
stage=1                 # first stage to run
stop_stage=100          # last stage to run
nj=2                    # parallel jobs for data/feature stages
inference_nj=2          # parallel decoding jobs per test set
ngpu=0                  # GPUs for training; >1 launches torchrun (DDP, or FSDP by the config)
ddp_cpu_procs=0         # >1: this many CPU processes (gloo), for testing without GPUs
data_dir=data
feats_dir=dump/fbank
expdir=exp
train_set=train
valid_set=dev
test_sets="test"
local_data_opts=""      # passed to local/data.sh
feats_type=fbank        # fbank: stage 2 dumps fbank (Conformer encoders); raw: encoders read wav.scp
fbank_conf=""           # extra --key value options for compute_fbank
min_dur=0.3             # seconds; shorter training utterances are dropped (counted)
max_dur=30.0
llm_pretrain_config=""  # stage 4: config of the small LLM pretrained offline; empty: skip (hub LLM)
llm_prompts=""          # stage 4: task prompt file of the LLM's instruction data
llm_prep_opts=""        # extra options for lm_prepare_data
llm_exp=""              # default: ${expdir}/llm_<config name>
sllm_config=conf/train_sllm.yaml
sllm_tag=""             # experiment name; default: from the config file name
sllm_args=""            # extra --key value overrides for training
encoder_init=""         # an ASR model whose encoder (and CMVN) weights start the speech LLM's encoder
inference_config=conf/decode_sllm.yaml
inference_tag=""
inference_args=""       # extra --key value overrides for decoding
inference_model=valid.acc.ave.pt   # checkpoint file name under the exp dir
results_md=RESULTS.md
results_extra_exp_dirs=""  # exp dirs of other recipes whose scored rows join the table (baselines)
export_dir=""           # default: ${sllm_exp}/export

template_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
asr_template_dir=$(readlink -f "${template_dir}/../asr1")
. "${asr_template_dir}/utils/setup.sh"

[ -n "${sllm_tag}" ] || sllm_tag=$(basename "${sllm_config}" .yaml)
[ -n "${inference_tag}" ] || inference_tag=$(basename "${inference_config}" .yaml)_$(basename "${inference_model}" .pt)
sllm_exp=${expdir}/sllm_${sllm_tag}
[ -n "${llm_exp}" ] || llm_exp=${expdir}/llm_$(basename "${llm_pretrain_config:-none}" .yaml)
llm_dir=${llm_exp}/hf    # the pretrained LLM as a transformers directory (stage 4 output)
[ -n "${export_dir}" ] || export_dir=${sllm_exp}/export
case "${feats_type}" in
    fbank) sllm_feats_dir=${feats_dir} ;;
    raw) sllm_feats_dir=${data_dir}; feats_dir=${data_dir} ;;  # filtering then works on the data dirs
    *) log "error: --feats_type must be fbank or raw, got '${feats_type}'"; exit 1 ;;
esac
train_sp=${train_set}   # the ASR stages' name for the (speed-perturbed) training set
timing_file=${expdir}/stage_times.tsv
mkdir -p "${expdir}"

run_stage 1 data "${asr_template_dir}/stages/1_data.sh"
if [ "${feats_type}" = fbank ]; then
    run_stage 2 features "${asr_template_dir}/stages/3_features.sh"
fi
run_stage 3 filter "${asr_template_dir}/stages/4_filter.sh"
run_stage 4 llm_pretrain "${template_dir}/stages/4_llm_pretrain.sh"
run_stage 5 train "${template_dir}/stages/5_train.sh"
run_stage 6 decode "${template_dir}/stages/6_decode.sh"
run_stage 7 score "${template_dir}/stages/7_score.sh"
run_stage 8 export "${template_dir}/stages/8_export.sh"
log "all requested stages (${stage}..${stop_stage}) finished"
