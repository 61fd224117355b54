#!/usr/bin/env bash
# ASR recipe template: a staged pipeline from a corpus to RESULTS.md and a packed model.
# Recipes link this file and pass their corpus-specific options, e.g.
#   ./asr.sh --train_set train --valid_set dev --test_sets "test" --asr_config conf/train.yaml
# Stages (each one skips work that is already done, and says so):
#   1 data preparation (local/data.sh)       6 training
#   2 speed perturbation                     7 decoding (--inference_nj jobs per test set)
#   3 fbank features + global CMVN stats     8 scoring and RESULTS.md
#  3b encoder features (--encoder_feats_config; --stage 3 includes 3b and 3c)
#  3c discrete units (--num_units)
#   4 filtering by duration / empty text     9 packing the model into one archive
#   5 tokenizer (sentencepiece)
#  5b external LM on the token list (--use_lm true; --stage 5 includes 5b)
# With --use_lm true, stage 5b trains a causal LM (--lm_config) over the ASR's tokens on
# --lm_train_text, and stages 7-8 decode and score every test set twice: without the LM
# (--inference_config) and with shallow fusion (--lm_inference_config, which sets lm_weight); the
# decoding settings in RESULTS.md name the LM. --lm_tune_set dev adds a dev decoding per
# ctc_weight:lm_weight pair of --lm_tune_grid, to choose the weights of --lm_inference_config
# from. See docs/recipes.md.
set -euo pipefail

recipe_cmd=${RECIPE_CMD:-$0 $*}   # recorded in RESULTS.md
help_message="Usage: $0 [--stage N] [--stop_stage M] [--key value ...]; see the variables at the top of $0"
stage=1                 # first stage to run
stop_stage=100          # last stage to run
nj=2                    # parallel jobs for data/feature stages
inference_nj=2          # parallel decoding jobs per test set
ngpu=0                  # GPUs for training; >1 launches torchrun DDP
ddp_cpu_procs=0         # >1: DDP over this many CPU processes (gloo), for testing without GPUs
data_dir=data
feats_dir=dump/fbank
expdir=exp
train_set=train
valid_set=dev
test_sets="test"
local_data_opts=""      # passed to local/data.sh
speed_perturb_factors="0.9 1.0 1.1"   # empty: no speed perturbation
fbank_conf=""           # extra --key value options for compute_fbank
min_dur=0.3             # seconds; shorter training utterances are dropped (counted)
max_dur=20.0
encoder_feats_config="" # stage 3b: a training config whose encoder is dumped; empty: 3b and 3c skip
encoder_feats_layer=last  # N (hidden state), last, or weighted_sum (with --encoder_feats_checkpoint)
encoder_feats_dtype=float16  # float16 or float32
encoder_feats_checkpoint=""  # a fine-tuned ASR model whose encoder weights are dumped
encoder_feats_dir=""    # default: <dir of feats_dir>/<config name>_<layer>, e.g. dump/train_hubert_large_21
encoder_feats_opts=""   # extra options for dump_encoder_features
train_on_encoder_feats=false  # true: stages 6-7 read ${encoder_feats_dir}/<set> (encoder: precomputed)
num_units=0             # stage 3c: k-means clusters; 0: skip
kmeans_subset_utts=2000 # training utterances k-means is fitted on
kmeans_opts=""          # extra options for train_kmeans
token_type=bpe          # bpe, unigram or char
nbpe=500
asr_config=conf/train.yaml
asr_tag=""              # experiment name; default: from the config file name
asr_args=""             # extra --key value overrides for training
inference_config=conf/decode.yaml
inference_tag=""
inference_args=""       # extra --key value overrides for decoding
inference_model=valid.acc.ave.pt   # checkpoint file name under the exp dir
use_lm=false            # true: stage 5b trains an external LM, stage 7 decodes with it
lm_config=conf/train_lm.yaml
lm_tag=""               # LM experiment name; default: from the config file name
lm_args=""              # extra --key value overrides for LM training
lm_train_text=""        # '<id> <sentence>' lines; default: ${data_dir}/local/lm_train.txt when local/data.sh
                        # made one, else the training transcripts ${data_dir}/${train_set}/text
lm_valid_text=""        # default: the validation transcripts ${data_dir}/${valid_set}/text
lm_inference_config=conf/decode_lm.yaml  # use_lm=true: the second decoding of stage 7 (sets lm_weight)
inference_lm=valid.loss.ave.pt     # LM checkpoint file name under the LM exp dir
use_lexicon=false       # use_lm=true: the LM decodings spell only words of the LM training text (stage
                        # 5b writes them to <lm exp>/words.txt; asr_inference --lexicon)
lm_tune_set=""          # use_lm=true: also decode and score this set (e.g. dev, never a test set) with
lm_tune_grid="0.3:0.5 0.5:0.3 0.5:0.5 0.5:0.7"  # each ctc_weight:lm_weight pair here (over
                        # lm_inference_config): a RESULTS.md row per pair to choose the weights from
results_md=RESULTS.md
pack_dir=packed

template_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
. "${template_dir}/utils/setup.sh"

[ -n "${asr_tag}" ] || asr_tag=$(basename "${asr_config}" .yaml)_${token_type}${nbpe}
[ -n "${lm_tag}" ] || lm_tag=$(basename "${lm_config}" .yaml)_${token_type}${nbpe}
[ -n "${inference_tag}" ] || inference_tag=$(basename "${inference_config}" .yaml)_$(basename "${inference_model}" .pt)
# Decodings of stages 7-8: "tag config" pairs; with the LM, the plain decoding stays next to it.
# A tag in decoding_sets decodes those sets instead of ${test_sets}, with decoding_args added.
decodings=("${inference_tag} ${inference_config}")
declare -A decoding_sets=() decoding_args=()
if [ "${use_lm}" = true ]; then
    lm_decoding_tag=$(basename "${lm_inference_config}" .yaml)_${lm_tag}_$(basename "${inference_model}" .pt)
    [ "${use_lexicon}" != true ] || lm_decoding_tag+=_lex
    decodings+=("${lm_decoding_tag} ${lm_inference_config}")
    if [ -n "${lm_tune_set}" ]; then
        for t in ${test_sets}; do
            [ "${t}" != "${lm_tune_set}" ] || { log "error: --lm_tune_set ${t} is a test set; tune on a held-out dev set"; exit 1; }
        done
        for pair in ${lm_tune_grid}; do
            [[ "${pair}" =~ ^[0-9.]+:[0-9.]+$ ]] || { log "error: --lm_tune_grid entry '${pair}': expected ctc_weight:lm_weight"; exit 1; }
            tune_tag=${lm_decoding_tag}_tune_ctc${pair%%:*}_lm${pair##*:}
            decodings+=("${tune_tag} ${lm_inference_config}")
            decoding_sets[${tune_tag}]=${lm_tune_set}
            decoding_args[${tune_tag}]="--ctc_weight ${pair%%:*} --lm_weight ${pair##*:}"
        done
    fi
fi
asr_exp=${expdir}/asr_${asr_tag}
lm_exp=${expdir}/lm_${lm_tag}
if [ -n "${speed_perturb_factors}" ]; then train_sp=${train_set}_sp; else train_sp=${train_set}; fi
token_dir=${data_dir}/token_list/${token_type}${nbpe}
[ -n "${encoder_feats_dir}" ] || encoder_feats_dir=$(dirname "${feats_dir}")/$(basename "${encoder_feats_config:-none}" .yaml)_${encoder_feats_layer}
units_dir=${encoder_feats_dir}/units${num_units}
asr_feats_dir=${feats_dir}   # the sets stages 6-7 read (raw-audio configs use their wav.scp)
if [ "${train_on_encoder_feats}" = true ]; then
    [ -n "${encoder_feats_config}" ] || { log "error: --train_on_encoder_feats true needs --encoder_feats_config"; exit 1; }
    asr_feats_dir=${encoder_feats_dir}
fi
timing_file=${expdir}/stage_times.tsv
mkdir -p "${expdir}"

run_stage 1 data
run_stage 2 speed_perturb
run_stage 3 features
run_stage 3b encoder_features
run_stage 3c units
run_stage 4 filter
run_stage 5 tokenizer
run_stage 5b lm
run_stage 6 train
run_stage 7 decode
run_stage 8 score
run_stage 9 pack
log "all requested stages (${stage}..${stop_stage}) finished"
