#!/usr/bin/env bash
# mini_synth data preparation: a synthetic English corpus made offline, plus real speech tests.
#
#   local/data.sh [--data_dir data] [--audio_dir downloads/audio] [--nj 2] [--seed 1]
#                 [--num_train 4000] [--num_dev 150] [--num_test 200] [--tiny false]
#                 [--realspeech_dir ../../../../shared/data/realspeech]
#
# 1. Corpus: KJV verses (Debian bible-kjv, public domain; Psalms, Proverbs, Ecclesiastes and
#    the Gospels, 5-18 words) spoken by 17 espeak-ng/festival/flite voices with varied rate and pitch
#    (training voices also timbre: formant shifts) and white/pink/brown noise at 20/15/10 dB SNR (a quarter clean). Test voices
#    (espeak en-us+f4, festival kal_diphone) are held out of train and dev. Writes
#    data/{train,dev,test} and data/local/corpus_info.yaml (sources, versions, sizes, timing).
#    Defaults: ~9.9 h train, ~11 min dev, ~15 min test; about 320 s of synthesis on 2 cores.
# 2. Real human speech test sets data/test_real_{librivox,librispeech,ljspeech,jfk} when the
#    shared realspeech folder exists (relative paths are taken from the recipe directory).
# 3. Text of the external LM (asr.sh --use_lm true, stage 5b): data/local/lm_train.txt, all
#    31,102 KJV verses ('Gen001_001 in the beginning ...', normalized like the transcripts)
#    except those of every set but train (the 150 dev and 200 test verses; ~30,700 remain).
# Every step skips work that is already done. --tiny true makes 16/4/4 utterances (seconds).
set -euo pipefail

data_dir=data
audio_dir=downloads/audio
nj=2
num_train=8000
num_dev=150
num_test=200
seed=1
tiny=false
realspeech_dir=../../../../shared/data/realspeech
help_message="Usage: $0 [--data_dir data] [--audio_dir downloads/audio] [--nj 2] [--num_train N]
  [--num_dev N] [--num_test N] [--seed 1] [--tiny true|false] [--realspeech_dir DIR]"

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
main_root=$(cd "${recipe_dir}/../../.." && pwd -P)
. "${main_root}/egs/TEMPLATE/asr1/utils/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (data.sh) $*"; }

# The package from this checkout, whether or not path.sh was sourced.
python=python3
[ -x "${main_root}/.venv/bin/python" ] && python="${main_root}/.venv/bin/python"
export PYTHONPATH="${main_root}${PYTHONPATH:+:${PYTHONPATH}}"

if [ "${tiny}" = true ]; then
    num_train=16; num_dev=4; num_test=4
    log "tiny mode: ${num_train}/${num_dev}/${num_test} utterances"
fi
case "${realspeech_dir}" in
    /*) ;;
    *) realspeech_dir="${recipe_dir}/${realspeech_dir}" ;;
esac
[ -d "${realspeech_dir}" ] && realspeech_dir=$(cd "${realspeech_dir}" && pwd -P)

# An early check for the common commands; make_corpus.py check_voices checks every voice the
# corpus needs (engine, sox, festival voice packages, flite) before it synthesizes anything.
for cmd in bible espeak-ng festival sox; do
    if ! command -v "${cmd}" >/dev/null; then
        echo "$0: '${cmd}' not found; install the Debian packages bible-kjv espeak-ng festival" \
             "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox" >&2
        exit 1
    fi
done

log "step 1: synthetic corpus -> ${data_dir}/{train,dev,test} (audio in ${audio_dir})"
"${python}" "${recipe_dir}/local/make_corpus.py" \
    --data_dir "${data_dir}" --audio_dir "${audio_dir}" --nj "${nj}" --seed "${seed}" \
    --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}"

log "step 2: real speech test sets from ${realspeech_dir}"
"${python}" "${recipe_dir}/local/prepare_realspeech.py" \
    --realspeech_dir "${realspeech_dir}" --data_dir "${data_dir}"

made=""
held_out=()
for d in "${data_dir}"/*/; do
    [ -f "${d}wav.scp" ] && made+=" $(basename "${d}")"
    case "$(basename "${d}")" in train*) ;; *) [ -f "${d}text" ] && held_out+=("${d}text") ;; esac
done

log "step 3: LM training text -> ${data_dir}/local/lm_train.txt (KJV without the verses of ${held_out[*]})"
"${python}" "${recipe_dir}/local/make_lm_text.py" --exclude "${held_out[@]}" --out "${data_dir}/local/lm_train.txt"
log "done:${made} + local/lm_train.txt"
