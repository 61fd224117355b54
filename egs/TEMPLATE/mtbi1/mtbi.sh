#!/usr/bin/env bash
# MTBI recipe template (multi-task behavior imitation with speech-text interleaving; docs/mtbi.md):
# several speech-LLM systems trained on the same data with the same budget, then compared on WER
# and on the task-prompt benchmark in one RESULTS.md. It builds on what other recipes made: the data
# dirs and features of an asr1 recipe, its ASR model (word alignment, encoder initialization) and an
# LLM (a hub id, or the directory an sllm1 recipe's stage 4 pretrained). Recipes link this file, e.g.
#   ./mtbi.sh --data_dir ../asr1/data --feats_dir ../asr1/dump/fbank --asr_exp ../asr1/exp/asr_x \
#       --llm ../sllm1/exp/llm_lm_pretrain/hf --systems "asr_only mtbi mtbi_il"
# Stages (each one skips work that is already done, and says so):
#   1 prerequisites: data dirs, features, ASR model, LLM, prompt set, systems
#   2 word alignment of ${align_sets} with the ASR model (only when a system interleaves)
#   3 imitation targets from the frozen LLM: the training set (--splits train) and the benchmark
#     sets ${mtbi_test_sets} (--splits all)
#   4 training of every system of --systems (sllm1's training stage), exp/sllm_<name>
#   5 decoding per system: the test sets transcribed (WER) and the benchmark's task prompts
#   6 scoring per system: WER/CER (score) and the benchmark (mtbi_score)
#   7 RESULTS.md: the WER rows (write_results) and one MTBI table per benchmark set (mtbi_table)
# A system is a name in --systems_file: its training config, the overrides that make it that system,
# and its label in the table (speechllm.bin.mtbi_systems checks that they share the budget).
set -euo pipefail

recipe_cmd=${RECIPE_CMD:-$0 $*}   # recorded in RESULTS.md
help_message="Usage: $0 [--stage N] [--stop_stage M] [--key value ...]; see the variables at the top of $0"
stage=1                 # first stage to run
stop_stage=100          # last stage to run
nj=2                    # parallel jobs of the alignment and target stages
inference_nj=2          # parallel decoding jobs per test set and system
ngpu=0                  # GPUs for training (>1: torchrun), and > 0: alignment/targets on cuda
ddp_cpu_procs=0         # >1: training in this many CPU processes (gloo), for testing without GPUs
train_jobs=1            # CPU: train this many systems at a time, each pinned to its share of the cores
data_dir=data           # the asr1 recipe's data dirs
feats_dir=dump/fbank    # ... and its features (feats_type fbank)
feats_type=fbank        # fbank: the speech LLM reads ${feats_dir}/<set>; raw: ${data_dir}/<set> (wav.scp)
expdir=exp
train_set=train
valid_set=dev
test_sets="test"        # transcribed and scored by WER
mtbi_test_sets=""       # benchmark sets (task prompts); default: the first of test_sets
data_recipe=""          # the recipe that makes the data dirs and features (named in errors)
asr_recipe=""           # the recipe that makes the ASR model (named in errors); default: data_recipe
asr_exp=""              # its ASR experiment dir (config.yaml): aligns the words
asr_model=valid.acc.ave.pt   # checkpoint file name under ${asr_exp}
asr_token_dir=""        # tokens.txt and tokenizer.model of the ASR model
asr_cmvn=""             # CMVN stats file the ASR config's relative path stands for; default:
                        # ${align_feats_dir}/${train_set}/cmvn.json (values come from the checkpoint)
encoder_init=""         # an ASR model whose encoder (and CMVN) weights start the speech LLM's encoder
align_sets=""           # sets to align; default: "${train_set} ${valid_set}"
align_feats_dir=""      # the sets as the ASR model reads them; default: the speech LLM's sets
align_opts=""           # extra options for align_words (--batch_size, --device)
llm=""                  # the frozen LLM (hub id or directory); default: the systems' config llm
llm_recipe=""           # the recipe that makes ${llm} (named in errors)
systems_file=conf/systems.yaml
systems="asr_only mtbi mtbi_il"   # systems to train and compare, in table order
sllm_args=""            # extra --key value overrides for every system's training
mtbi_dump=dump/mtbi     # word alignments and targets of this recipe
targets_seed=0
train_per_utt=4         # (task, wording) pairs per training utterance, or all
eval_per_utt=all        # pairs per benchmark utterance, or all
targets_opts=""         # extra options for mtbi_make_targets (--device cuda --dtype bfloat16 --batch_size 64)
train_targets_opts=""   # ... for the training set only (e.g. --exclude_tasks repeat,transcribe)
inference_config=conf/decode_sllm.yaml   # transcription of ${test_sets}
inference_tag=""
inference_args=""
inference_model=valid.acc.ave.pt   # checkpoint file name under each system's exp dir
mtbi_inference_config=conf/decode_mtbi.yaml   # the benchmark's task prompts
mtbi_inference_tag=""
mtbi_inference_args=""
llm_row="text LLM (transcript as text)"   # table row of the LLM's own answers; "" for none
table_references=""     # systems every row is compared with (paired unseen-task accuracy); "": the first
results_md=RESULTS.md
results_extra_exp_dirs=""  # exp dirs of other recipes whose scored rows join the WER table

template_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
asr_template_dir=$(readlink -f "${template_dir}/../asr1")
sllm_template_dir=$(readlink -f "${template_dir}/../sllm1")
. "${asr_template_dir}/utils/setup.sh"

[ -n "${asr_recipe}" ] || asr_recipe=${data_recipe}
[ -n "${mtbi_test_sets}" ] || mtbi_test_sets=${test_sets%% *}
[ -n "${align_sets}" ] || align_sets="${train_set} ${valid_set}"
model_name=$(basename "${inference_model}" .pt)
[ -n "${inference_tag}" ] || inference_tag=$(basename "${inference_config}" .yaml)_${model_name}
[ -n "${mtbi_inference_tag}" ] || mtbi_inference_tag=$(basename "${mtbi_inference_config}" .yaml)_${model_name}
case "${feats_type}" in
    fbank) sllm_feats_dir=${feats_dir} ;;
    raw) sllm_feats_dir=${data_dir} ;;
    *) log "error: --feats_type must be fbank or raw, got '${feats_type}'"; exit 1 ;;
esac
[ -n "${align_feats_dir}" ] || align_feats_dir=${sllm_feats_dir}
[ -n "${asr_cmvn}" ] || asr_cmvn=${align_feats_dir}/${train_set}/cmvn.json
llm_pretrain_config=""  # sllm1's training stage: the LLM comes from --llm, never from its stage 4
common_sllm_args=${sllm_args}
align_dir=${mtbi_dump}/align
targets_dir=${mtbi_dump}/targets
train_targets=${targets_dir}/${train_set}.jsonl
timing_file=${expdir}/stage_times.tsv
mkdir -p "${expdir}"

# The systems, resolved and checked once: label, written config, whether they need targets / words.
systems_tsv=$(python -m speechllm.bin.mtbi_systems --systems_file "${systems_file}" --systems "${systems}" \
    --out_dir "${expdir}/systems" --args "${common_sllm_args}")
declare -A sys_label sys_config sys_targets sys_interleave
any_targets=false; any_interleave=false; interleaving_systems=""
while IFS=$'\t' read -r _sys _label _config _targets _interleave _llm _prompts; do
    sys_label[${_sys}]=${_label}; sys_config[${_sys}]=${_config}
    sys_targets[${_sys}]=${_targets}; sys_interleave[${_sys}]=${_interleave}
    [ "${_targets}" = 1 ] && any_targets=true
    [ "${_interleave}" = 1 ] && { any_interleave=true; interleaving_systems+=" ${_sys}"; }
    [ -n "${llm}" ] || [ "${_llm}" = - ] || llm=${_llm}
    prompts_file=${_prompts}
done <<< "${systems_tsv}"
if [ -z "${llm}" ]; then
    log "error: no LLM: give --llm (a hub id or directory) or set llm: in the systems' config"
    exit 1
fi

run_stage 1 prerequisites
run_stage 2 align
run_stage 3 targets
# Stages 4-6 work system by system: a run of other systems adds to their times instead of
# replacing them (utils/run_stage.sh).
stage_scope=${systems} run_stage 4 train
stage_scope=${systems} run_stage 5 decode
stage_scope=${systems} run_stage 6 score
run_stage 7 results
log "all requested stages (${stage}..${stop_stage}) finished"
